"""python-threatexchange as the reference for the formats it defines (used by tests/bank_formats.rs).

    pytx_oracle.py write DIR   # pytx writes: DIR/simple.pdq.te (its CLI's ThreatExchange CSV),
                               # DIR/hma/simple.pdq.te (HMA 1.0's), DIR/local.txt (local-file lines);
                               # prints, as JSON, what it wrote, field by field
    pytx_oracle.py read DIR    # pytx reads DIR/simple.pdq.te and DIR/local.txt (written by Pharos) and
                               # prints what it read, as JSON

Only pytx's own classes read and write the files; this script builds their inputs and reports their results.
"""

import json
import pathlib
import sys

from threatexchange.cli.dataset.simple_serialization import CliIndicatorSerialization, HMASerialization
from threatexchange.exchanges.clients.fb_threatexchange.descriptor import SimpleDescriptorRollup
from threatexchange.exchanges.impl.file_api import FileCollaborationConfig, LocalFileSignalExchangeAPI
from threatexchange.signal_type.md5 import VideoMD5Signal
from threatexchange.signal_type.pdq.signal import PdqSignal

PDQS = [
    "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
    "d8f871cce1e3a43f2b7d6a1b3c49617095f21e5cc26e5331cb869d6e0ff0d1a3",
    "30a10efd71cc3d429013d48d0ffffc52e34e0e17ada952a9d29685211ea9e5af",
]
MD5 = "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1"


def rows(items):
    return [
        {"hash": i.indicator, "descriptor_id": str(i.rollup.first_descriptor_id),
         "added_on": i.rollup.added_on, "tags": sorted(i.rollup.labels)}
        for i in items
    ]


def write(d: pathlib.Path) -> None:
    rollups = [
        SimpleDescriptorRollup(3058061737574159, "2020-07-01T18:31:15+0000", {"media_type_photo", "true_positive"}),
        SimpleDescriptorRollup(2951392314893716, "2021-03-09T07:02:44+0000", set()),
        SimpleDescriptorRollup(3192871120732117, "mine", {"disputed"}),
    ]
    cli = [CliIndicatorSerialization("pdq", h, r) for h, r in zip(PDQS, rollups)]
    CliIndicatorSerialization.store(d, cli)
    (d / "hma").mkdir()
    hma = [HMASerialization(h, "pdq", str(4091833944178302 + n), r) for n, (h, r) in enumerate(zip(PDQS, rollups))]
    HMASerialization.store(d / "hma", hma)
    # The local-file writer, `LocalFileSignalExchangeAPI.report_opinion`, fails in 1.2.17 (it opens the file
    # with mode "wta", which Python refuses), so the lines are the ones it means to write,
    # f"{signal_type.get_name()} {signal}", with pytx's own names for the types.
    local = [(PdqSignal, PDQS[0]), (PdqSignal, PDQS[1]), (VideoMD5Signal, MD5)]
    (d / "local.txt").write_text("".join(f"{s.get_name()} {v}\n" for s, v in local))
    json.dump({
        "te": rows(cli),
        "hma_indicator_ids": [i.indicator_id for i in hma],
        "local": [[s.get_name(), v] for s, v in local],
    }, sys.stdout)


def read(d: pathlib.Path) -> None:
    te = rows(CliIndicatorSerialization.load(d))
    api = LocalFileSignalExchangeAPI(FileCollaborationConfig(name="t", filename=str(d / "local.txt")))
    local = []
    for delta in api.fetch_iter([PdqSignal, VideoMD5Signal], None):
        local.extend([list(k) for k in delta.updates])
    json.dump({"te": te, "local": local}, sys.stdout)


if __name__ == "__main__":
    {"write": write, "read": read}[sys.argv[1]](pathlib.Path(sys.argv[2]))
