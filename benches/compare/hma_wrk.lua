-- wrk script for hma_compare.py: rotates through a prepared list of requests and prints one JSON line.
--
-- HMA_WRK_LIST names a file with one request per line, tab-separated:
--   METHOD <TAB> PATH [<TAB> BODY_FILE <TAB> CONTENT_TYPE]
-- Every request is formatted once in init() (bodies read from their files then), so request() is a table
-- lookup and wrk stays far from being the bottleneck. HMA_WRK_TOKEN, when set, is sent as
-- "Authorization: Bearer TOKEN". Each thread starts at its own offset in the list.

local reqs = {}
local idx = 0

function init(args)
  local list = os.getenv("HMA_WRK_LIST")
  local token = os.getenv("HMA_WRK_TOKEN")
  for line in io.lines(list) do
    local f = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do
      f[#f + 1] = field
    end
    local headers = {}
    if token ~= nil and token ~= "" then
      headers["Authorization"] = "Bearer " .. token
    end
    local body = nil
    if f[3] ~= nil and f[3] ~= "" then
      local fh = assert(io.open(f[3], "rb"))
      body = fh:read("*a")
      fh:close()
      headers["Content-Type"] = f[4]
    end
    reqs[#reqs + 1] = wrk.format(f[1], f[2], headers, body)
  end
  idx = math.random(#reqs)
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us":%d,"requests":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d},"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
