//! The container image and the Kubernetes manifests (issue 13), checked offline.
//!
//! - **Schemas.** Every kustomization under `deploy/kubernetes` (the base and `example-secrets/`) is rendered
//!   (`kustomize build`, else `kubectl kustomize`; with neither, the files its `resources:` list names) and
//!   every document is validated by kubernetes-validate (`tests/kubeval.py`) against the strict schemas of
//!   the versions in [`KUBERNETES_VERSIONS`]: an unknown field, a wrong type or an unknown kind fails. A
//!   YAML file that its folder's kustomization does not list fails too: it would be neither applied nor
//!   validated.
//! - **Agreement.** The manifests agree with each other and with the daemon's configuration: probe and
//!   container ports with the ConfigMap's `pharos.toml`, the termination grace period with
//!   `shutdown_grace_s` and the preStop sleep, mounts with the paths the config names, selectors with the
//!   pod's labels, the user with the Dockerfile's; `pharos serve --print-config` accepts both configs.
//! - **Dockerfile.** Its stages agree with `Cargo.toml` (rust-version) and the image's config (ports, config
//!   path, data directory); the Debian packages it installs exist (`apt-cache`, where the machine has
//!   bookworm's package lists); and where `docker info` reaches a daemon, the image is built and
//!   `pharos --version` run in it (CI's machine has only the docker client, so there it says it skipped).
//!
//! The manifest tests need `$PHAROS_KUBEVAL_PYTHON` (the venv `scripts/setup-kubeval.sh` makes); without
//! it they say loudly that they were skipped, unless `PHAROS_REQUIRE_PYTHON=1`, which makes that a failure.

use crate::common::{pharos_env, python_from_env, show};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The Kubernetes versions the manifests must be valid for: the oldest supported (1.30: the preStop `sleep`
/// action is on by default from there) and the newest whose schemas kubernetes-validate ships.
const KUBERNETES_VERSIONS: &str = "1.30,1.37";

/// Seconds the termination grace period must leave beyond preStop + `shutdown_grace_s`: the process still
/// has to exit after its drain deadline.
const GRACE_MARGIN_S: u64 = 5;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn kube_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn kubeval_python() -> Option<PathBuf> {
    python_from_env("PHAROS_KUBEVAL_PYTHON", "scripts/setup-kubeval.sh", "this Kubernetes manifest test")
}

// ---- rendering and schema validation ---------------------------------------------------------------------

/// The kustomization directories: `deploy/kubernetes` and each of its subfolders (every one must be a
/// kustomization, or its manifests would be checked by nothing).
fn kustomizations() -> Vec<PathBuf> {
    let mut dirs = vec![kube_dir()];
    let mut subdirs: Vec<PathBuf> =
        std::fs::read_dir(kube_dir()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    subdirs.sort();
    for d in &subdirs {
        assert!(d.join("kustomization.yaml").is_file(), "{} has no kustomization.yaml", d.display());
    }
    dirs.extend(subdirs);
    dirs
}

/// The YAML files of `dir` other than its kustomization, by file name.
fn yaml_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| (n.ends_with(".yaml") || n.ends_with(".yml")) && n != "kustomization.yaml")
        .collect()
}

/// The top-level keys of a kustomization.yaml and the items of its `resources:` list (block style, as
/// ours are written; enough for the fallback renderer and the "every file is listed" check).
fn kustomization_entries(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut keys, mut resources) = (Vec::new(), Vec::new());
    let mut in_resources = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') && !line.starts_with('-') {
            let key = trimmed.split(':').next().unwrap().to_string();
            in_resources = key == "resources";
            keys.push(key);
        } else if in_resources {
            let item =
                trimmed.strip_prefix("- ").unwrap_or_else(|| panic!("resources: not a list item: {line}"));
            let item = item.split(" #").next().unwrap().trim().trim_matches(|c| c == '"' || c == '\'');
            resources.push(item.to_string());
        }
    }
    (keys, resources)
}

/// What kustomize makes of `dir`, and which tool did it; `None` when neither `kustomize` nor `kubectl` is
/// installed. A tool that runs and fails fails the test (the kustomization is broken).
fn kustomize(dir: &Path) -> Option<(String, String)> {
    for (tool, sub) in [("kustomize", "build"), ("kubectl", "kustomize")] {
        match Command::new(tool).arg(sub).arg(dir).stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() => {
                return Some((format!("{tool} {sub}"), String::from_utf8(out.stdout).unwrap()));
            }
            Ok(out) => panic!("{tool} {sub} {}: {}", dir.display(), show(&out)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("running {tool}: {e}"),
        }
    }
    None
}

/// Renders the kustomization in `dir`, validates every document against [`KUBERNETES_VERSIONS`] (strict)
/// and returns the documents. Also fails when a YAML file of `dir` is not in its `resources:`.
fn render_and_validate(python: &Path, dir: &Path) -> Vec<Value> {
    let (keys, resources) = kustomization_entries(&read(&dir.join("kustomization.yaml")));
    let listed: BTreeSet<String> = resources.iter().cloned().collect();
    let unlisted: Vec<_> = yaml_files(dir).difference(&listed).cloned().collect();
    assert!(
        unlisted.is_empty(),
        "{}: {unlisted:?} not in kustomization.yaml's resources: (neither applied nor validated)",
        dir.display()
    );
    let mut cmd = Command::new(python);
    cmd.arg(root().join("tests/kubeval.py")).arg(KUBERNETES_VERSIONS);
    let out = match kustomize(dir) {
        Some((tool, rendered)) => {
            eprintln!("{}: rendered by {tool}", dir.display());
            cmd.arg("-").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{}: {e}", python.display()));
            child.stdin.take().unwrap().write_all(rendered.as_bytes()).unwrap();
            child.wait_with_output().unwrap()
        }
        None => {
            // Without kustomize the resources are validated as written: only a kustomization that does no
            // more than list them can be checked that way.
            eprintln!(
                "\n*** {}: no kustomize or kubectl here: validating the files kustomization.yaml lists, \
                 unrendered ***\n",
                dir.display()
            );
            let extra: Vec<_> =
                keys.iter().filter(|k| !["apiVersion", "kind", "resources"].contains(&k.as_str())).collect();
            assert!(
                extra.is_empty(),
                "{}: kustomization.yaml uses {extra:?}: install kubectl to render it",
                dir.display()
            );
            for r in &resources {
                assert!(
                    !dir.join(r).is_dir(),
                    "{}: resource {r} is a folder: install kubectl to render it",
                    dir.display()
                );
                cmd.arg(dir.join(r));
            }
            cmd.stdin(Stdio::null()).output().unwrap()
        }
    };
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}: manifests do not validate: {}", dir.display(), show(&out));
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let docs: Vec<Value> =
        parsed["documents"].as_array().unwrap().iter().map(|d| d["document"].clone()).collect();
    assert!(!docs.is_empty(), "{}: no documents", dir.display());
    docs
}

#[test]
fn manifests_validate() {
    let Some(python) = kubeval_python() else { return };
    for dir in kustomizations() {
        let docs = render_and_validate(&python, &dir);
        let names: Vec<String> =
            docs.iter().map(|d| format!("{}/{}", text(d, "/kind"), text(d, "/metadata/name"))).collect();
        eprintln!(
            "{}: {} documents valid for Kubernetes {KUBERNETES_VERSIONS}: {names:?}",
            dir.display(),
            docs.len()
        );
    }
}

// ---- agreement between the manifests, the daemon's config and the Dockerfile ------------------------------

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("no string at {pointer} in {v:#}"))
}

fn number(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or_else(|| panic!("no number at {pointer} in {v:#}"))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

/// The port of a `HOST:PORT` listen address, which must be the wildcard so the pod's IP reaches it.
fn wildcard_port(cfg: &toml::Table, key: &str) -> u64 {
    let addr =
        cfg.get(key).and_then(toml::Value::as_str).unwrap_or_else(|| panic!("pharos.toml has no {key}"));
    let (host, port) = addr.rsplit_once(':').unwrap_or_else(|| panic!("{key} = {addr:?}: no port"));
    assert_eq!(host, "0.0.0.0", "{key} = {addr:?}: a pod must listen on every address");
    port.parse().unwrap_or_else(|_| panic!("{key} = {addr:?}: bad port"))
}

fn path_key<'a>(cfg: &'a toml::Table, key: &str) -> &'a Path {
    Path::new(
        cfg.get(key).and_then(toml::Value::as_str).unwrap_or_else(|| panic!("pharos.toml has no {key}")),
    )
}

/// A Kubernetes quantity in bytes (`4Gi`, `512Mi`, `1G`, `1000`).
fn bytes(quantity: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = quantity.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap_or_else(|_| panic!("quantity {quantity:?}")) * factor;
        }
    }
    quantity.parse().unwrap_or_else(|_| panic!("quantity {quantity:?}"))
}

/// Every label of `selector` is on the pod.
fn selects(selector: &Value, pod_labels: &Value, what: &str) {
    let selector = selector.as_object().unwrap_or_else(|| panic!("{what}: no selector"));
    assert!(!selector.is_empty(), "{what}: empty selector");
    for (k, v) in selector {
        assert_eq!(
            &pod_labels[k], v,
            "{what}: selector {k}={v} does not match the pod's labels {pod_labels}"
        );
    }
}

/// `pharos serve --print-config` accepts `config` (with `auth` pointed at a copy of `auth_toml`, so the auth
/// file is loaded too) and prints back every value it holds.
fn daemon_accepts(what: &str, config: &toml::Table, auth_toml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.toml");
    std::fs::write(&auth, auth_toml).unwrap();
    let mut cfg = config.clone();
    cfg.insert("auth".into(), toml::Value::String(auth.to_str().unwrap().into()));
    let file = dir.path().join("pharos.toml");
    std::fs::write(&file, toml::to_string(&cfg).unwrap()).unwrap();
    let out = pharos_env(["serve", "--print-config", "--config", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{what}: pharos serve --print-config refuses it: {}", show(&out));
    let printed: toml::Table = String::from_utf8(out.stdout).unwrap().parse().unwrap();
    for (k, v) in &cfg {
        assert_eq!(printed.get(k), Some(v), "{what}: {k} as the daemon reads it");
    }
}

fn image_config() -> toml::Table {
    read(&root().join("deploy/container/pharos.toml")).parse().unwrap()
}

#[test]
fn manifests_agree() {
    let Some(python) = kubeval_python() else { return };
    let docs = render_and_validate(&python, &kube_dir());
    let secrets = render_and_validate(&python, &kube_dir().join("example-secrets"));
    let dockerfile = Dockerfile::parse(&read(&root().join("Dockerfile")));
    let image_cfg = image_config();

    let configmap = find(&docs, "ConfigMap", "pharos-config");
    let cfg: toml::Table =
        text(configmap, "/data/pharos.toml").parse().expect("the ConfigMap's pharos.toml is TOML");
    let deploy = find(&docs, "Deployment", "pharos");
    let pod = &deploy["spec"]["template"]["spec"];
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // The ConfigMap and the image's own config describe the same layout (ports, paths, drain).
    for key in
        ["listen", "metrics", "health_listen", "data_dir", "tls_cert", "tls_key", "auth", "shutdown_grace_s"]
    {
        assert_eq!(
            cfg.get(key),
            image_cfg.get(key),
            "{key}: the ConfigMap and deploy/container/pharos.toml differ"
        );
    }
    // Both are TLS + auth: the daemon would refuse 0.0.0.0 otherwise.
    for key in ["tls_cert", "tls_key", "auth"] {
        assert!(cfg.contains_key(key), "the ConfigMap's pharos.toml has no {key}");
    }
    assert!(!cfg.contains_key("insecure"), "the ConfigMap must not set insecure");
    let auth_example = text(find(&secrets, "Secret", "pharos-auth"), "/stringData/auth.toml");
    daemon_accepts("the ConfigMap's pharos.toml", &cfg, auth_example);

    // Drain: preStop, then SIGTERM and at most shutdown_grace_s, all within the grace period.
    let grace = number(pod, "/terminationGracePeriodSeconds");
    let sleep = number(c, "/lifecycle/preStop/sleep/seconds");
    let drain = cfg["shutdown_grace_s"].as_integer().unwrap() as u64;
    assert!(
        grace >= drain + sleep + GRACE_MARGIN_S,
        "terminationGracePeriodSeconds {grace} < shutdown_grace_s {drain} + preStop {sleep} + margin {GRACE_MARGIN_S}"
    );

    // Ports: the container's named ports are the config's, and every probe is gRPC on the health port.
    let health = wildcard_port(&cfg, "health_listen");
    let port = |name: &str| {
        let p = c["ports"].as_array().unwrap().iter().find(|p| p["name"] == name);
        p.map(|p| number(p, "/containerPort")).unwrap_or_else(|| panic!("no container port named {name}"))
    };
    assert_eq!(port("grpc"), wildcard_port(&cfg, "listen"), "container port grpc vs listen");
    assert_eq!(port("metrics"), wildcard_port(&cfg, "metrics"), "container port metrics vs metrics");
    assert_eq!(port("health"), health, "container port health vs health_listen");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(
            number(c, &format!("/{probe}/grpc/port")),
            health,
            "{probe}: not gRPC on health_listen's port"
        );
    }
    let exposed: BTreeSet<u64> =
        dockerfile.runtime().words("EXPOSE").iter().map(|p| p.parse().unwrap()).collect();
    let ports: BTreeSet<u64> =
        c["ports"].as_array().unwrap().iter().map(|p| number(p, "/containerPort")).collect();
    assert_eq!(exposed, ports, "the Dockerfile's EXPOSE vs the container's ports");

    // Hardening, and the image's user.
    let uid: u64 = dockerfile.runtime().arg("PHAROS_UID").parse().unwrap();
    assert_eq!(number(pod, "/securityContext/runAsUser"), uid, "runAsUser vs the Dockerfile's PHAROS_UID");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);

    // Mounts: the config where the image's command reads it, each secret file where pharos.toml says.
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let mount_at = |path: &Path| {
        let m =
            c["volumeMounts"].as_array().unwrap().iter().find(|m| Path::new(text(m, "/mountPath")) == path);
        m.unwrap_or_else(|| panic!("nothing mounted at {}", path.display()))
    };
    let config_path = dockerfile.config_path();
    let m = mount_at(&config_path);
    assert_eq!(m["readOnly"], true);
    assert_eq!(text(m, "/subPath"), "pharos.toml");
    assert_eq!(
        text(volume(text(m, "/name")), "/configMap/name"),
        "pharos-config",
        "{}",
        config_path.display()
    );
    for key in ["tls_cert", "tls_key", "auth"] {
        let file = path_key(&cfg, key);
        let m = mount_at(file.parent().unwrap());
        assert_eq!(m["readOnly"], true, "{key}: secrets are mounted read-only");
        let secret = find(&secrets, "Secret", text(volume(text(m, "/name")), "/secret/secretName"));
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            secret["stringData"].get(name).is_some() || secret["data"].get(name).is_some(),
            "{key} = {}: the Secret mounted there has no key {name}",
            file.display()
        );
    }
    assert_eq!(find(&secrets, "Secret", "pharos-tls")["type"], "kubernetes.io/tls");
    let data = mount_at(path_key(&cfg, "data_dir"));
    assert!(volume(text(data, "/name"))["emptyDir"].is_object(), "data_dir is a per-pod emptyDir");

    // The database URL comes from a Secret that has that key.
    let env = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "PHAROS_DATABASE_URL")
        .expect("PHAROS_DATABASE_URL");
    let secret = find(&secrets, "Secret", text(env, "/valueFrom/secretKeyRef/name"));
    assert!(secret["stringData"].get(text(env, "/valueFrom/secretKeyRef/key")).is_some(), "{env}");

    // Memory: the pipeline's bounds fit under the limit.
    let pipeline = ["max_in_flight_bytes", "max_decoded_bytes"].map(|k| cfg[k].as_integer().unwrap() as u64);
    let limit = bytes(text(c, "/resources/limits/memory"));
    assert!(
        limit > pipeline.iter().sum(),
        "memory limit {limit} <= max_in_flight_bytes + max_decoded_bytes {pipeline:?}"
    );

    // Service: headless, selecting the pods, its ports the container's.
    let svc = find(&docs, "Service", "pharos");
    assert_eq!(svc["spec"]["clusterIP"], "None", "the Service must be headless (client-side balancing)");
    selects(&svc["spec"]["selector"], labels, "Service");
    for p in svc["spec"]["ports"].as_array().unwrap() {
        let target = &p["targetPort"];
        let to = target.as_str().map_or_else(|| target.as_u64().unwrap(), port);
        assert_eq!(number(p, "/port"), to, "Service port {}", text(p, "/name"));
    }

    // Disruptions and autoscaling: the budget selects the pods and never blocks every drain.
    let replicas = number(deploy, "/spec/replicas");
    selects(&deploy["spec"]["selector"]["matchLabels"], labels, "Deployment");
    let pdb = find(&docs, "PodDisruptionBudget", "pharos");
    selects(&pdb["spec"]["selector"]["matchLabels"], labels, "PodDisruptionBudget");
    let hpa = find(&docs, "HorizontalPodAutoscaler", "pharos");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(text(hpa, "/spec/scaleTargetRef/name"), text(deploy, "/metadata/name"));
    let min = number(hpa, "/spec/minReplicas");
    let min_available = number(pdb, "/spec/minAvailable");
    assert!(
        min_available < min && min_available < replicas,
        "minAvailable {min_available} would block every drain"
    );
    assert!(number(hpa, "/spec/maxReplicas") >= min.max(replicas));
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert!(c["resources"]["requests"]["cpu"].is_string(), "CPU utilisation is relative to the request");
}

// ---- the Dockerfile ------------------------------------------------------------------------------------

/// One build stage: its base, its name, its instructions (keyword upper-cased, continuation lines joined).
struct Stage {
    name: String,
    from: String,
    instructions: Vec<(String, String)>,
}

impl Stage {
    /// The default of `ARG name=…` in this stage, quotes removed.
    fn arg(&self, name: &str) -> String {
        args(&self.instructions, name).unwrap_or_else(|| panic!("stage {}: no ARG {name}", self.name))
    }

    /// The whitespace-separated words of this stage's instructions `keyword`.
    fn words(&self, keyword: &str) -> Vec<String> {
        self.instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .flat_map(|(_, v)| v.split_whitespace().map(String::from))
            .collect()
    }

    /// The JSON-array (exec form) value of this stage's only `keyword` instruction.
    fn exec_form(&self, keyword: &str) -> Vec<String> {
        let values: Vec<_> = self.instructions.iter().filter(|(k, _)| k == keyword).collect();
        assert_eq!(values.len(), 1, "stage {}: one {keyword}", self.name);
        serde_json::from_str(&values[0].1).unwrap_or_else(|e| panic!("{keyword} is not exec form: {e}"))
    }
}

fn args(instructions: &[(String, String)], name: &str) -> Option<String> {
    instructions.iter().filter(|(k, _)| k == "ARG").find_map(|(_, v)| {
        let (n, value) = v.split_once('=')?;
        (n.trim() == name).then(|| value.trim().trim_matches('"').to_string())
    })
}

struct Dockerfile {
    /// ARGs before the first FROM.
    global: Vec<(String, String)>,
    stages: Vec<Stage>,
}

impl Dockerfile {
    fn parse(text: &str) -> Dockerfile {
        let mut instructions = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(part) => current += part,
                None => {
                    current += trimmed;
                    let (keyword, rest) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
                    instructions.push((keyword.to_uppercase(), rest.trim().to_string()));
                    current.clear();
                }
            }
        }
        let mut out = Dockerfile { global: Vec::new(), stages: Vec::new() };
        for (keyword, rest) in instructions {
            if keyword == "FROM" {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                    _ => String::new(),
                };
                out.stages.push(Stage { name, from: words[0].to_string(), instructions: Vec::new() });
            } else if let Some(stage) = out.stages.last_mut() {
                stage.instructions.push((keyword, rest));
            } else {
                out.global.push((keyword, rest));
            }
        }
        out
    }

    fn stage(&self, name: &str) -> &Stage {
        self.stages.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no stage {name}"))
    }

    /// The image's stage: the last one.
    fn runtime(&self) -> &Stage {
        let last = self.stages.last().unwrap();
        assert_eq!(last.name, "runtime", "the last stage (the image) is named runtime");
        last
    }

    fn global_arg(&self, name: &str) -> String {
        args(&self.global, name).unwrap_or_else(|| panic!("no global ARG {name}"))
    }

    /// Where the image's command reads its config (`serve --config PATH`).
    fn config_path(&self) -> PathBuf {
        let cmd = self.runtime().exec_form("CMD");
        assert_eq!(cmd[..2], ["serve", "--config"], "CMD {cmd:?}");
        PathBuf::from(&cmd[2])
    }

    /// Every Debian package the Dockerfile may install (the GPU ones included), per stage.
    fn packages(&self) -> Vec<(&str, String)> {
        let mut out = Vec::new();
        for (stage, arg) in
            [("build", "BUILD_PACKAGES"), ("runtime", "RUNTIME_PACKAGES"), ("runtime", "GPU_PACKAGES")]
        {
            for p in self.stage(stage).arg(arg).split_whitespace() {
                out.push((stage, p.to_string()));
            }
        }
        out
    }
}

#[test]
fn dockerfile_agrees_with_image_config() {
    let d = Dockerfile::parse(&read(&root().join("Dockerfile")));
    let cfg = image_config();

    // The builder is the Rust version Cargo.toml promises, on the runtime's Debian release.
    let cargo: toml::Table = read(&root().join("Cargo.toml")).parse().unwrap();
    let rust_version = cargo["package"]["rust-version"].as_str().unwrap();
    assert_eq!(d.global_arg("RUST_VERSION"), rust_version, "the builder's Rust vs Cargo.toml's rust-version");
    assert_eq!(d.stage("build").from, "rust:${RUST_VERSION}-${DEBIAN_RELEASE}");
    assert_eq!(d.runtime().from, "debian:${DEBIAN_RELEASE}-slim");

    // No compiler in the image; the GPU packages only on request.
    let runtime = format!("{} {}", d.runtime().arg("RUNTIME_PACKAGES"), d.runtime().arg("GPU_PACKAGES"));
    for tool in ["gcc", "g++", "clang", "cmake", "nasm", "make", "build-essential", "rustc", "cargo"] {
        assert!(!runtime.split_whitespace().any(|p| p == tool), "the runtime image installs {tool}");
    }
    assert_eq!(d.runtime().arg("GPU"), "0", "the GPU packages are opt-in (--build-arg GPU=1)");

    // The command reads the config the Dockerfile copies in, which serves the exposed ports.
    assert_eq!(d.runtime().exec_form("ENTRYPOINT"), ["pharos"]);
    let config_path = d.config_path();
    let copy = format!("deploy/container/pharos.toml {}", config_path.display());
    assert!(d.runtime().instructions.iter().any(|(k, v)| k == "COPY" && *v == copy), "COPY {copy}");
    let exposed: BTreeSet<u64> = d.runtime().words("EXPOSE").iter().map(|p| p.parse().unwrap()).collect();
    let served: BTreeSet<u64> =
        ["listen", "metrics", "health_listen"].iter().map(|k| wildcard_port(&cfg, k)).collect();
    assert_eq!(exposed, served, "EXPOSE vs the image config's listen, metrics and health_listen ports");
    let data_dir = d
        .runtime()
        .instructions
        .iter()
        .find_map(|(k, v)| (k == "ENV").then(|| v.strip_prefix("PHAROS_DATA_DIR=")).flatten());
    assert_eq!(data_dir.map(Path::new), Some(path_key(&cfg, "data_dir")), "ENV PHAROS_DATA_DIR vs data_dir");

    // A numeric, non-root user (so Kubernetes' runAsNonRoot can verify it).
    let user = d.runtime().words("USER");
    let uid = d.runtime().arg("PHAROS_UID");
    assert_eq!(user, ["${PHAROS_UID}:${PHAROS_UID}"], "USER");
    assert!(uid.parse::<u32>().is_ok_and(|u| u >= 1000), "PHAROS_UID {uid}");

    // The daemon accepts the image's config (TLS and auth on 0.0.0.0), the example auth file standing in for
    // the mounted one.
    daemon_accepts("deploy/container/pharos.toml", &cfg, &read(&root().join("examples/auth.toml")));
}

/// The machine's Debian release codename, if it is Debian-like.
fn os_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines().find_map(|l| l.strip_prefix("VERSION_CODENAME=")).map(|c| c.trim_matches('"').to_string())
}

#[test]
fn dockerfile_packages_exist_in_debian() {
    let d = Dockerfile::parse(&read(&root().join("Dockerfile")));
    let release = d.global_arg("DEBIAN_RELEASE");
    let packages = d.packages();
    let have_lists = std::fs::read_dir("/var/lib/apt/lists")
        .map(|dir| dir.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().contains("_Packages")))
        .unwrap_or(false);
    let skip = |why: String| {
        eprintln!("\n*** SKIPPED: the Dockerfile's Debian packages {packages:?} not checked: {why} ***\n")
    };
    if Command::new("apt-cache").arg("--version").stdout(Stdio::null()).status().is_err() {
        return skip("no apt-cache on this machine".into());
    }
    if !have_lists {
        return skip("no apt package lists (run apt-get update)".into());
    }
    match os_codename() {
        Some(c) if c == release => {}
        other => return skip(format!("this machine's lists are for {other:?}, the image uses {release}")),
    }
    for (stage, p) in &packages {
        let out = Command::new("apt-cache").args(["policy", p]).stdin(Stdio::null()).output().unwrap();
        let policy = String::from_utf8_lossy(&out.stdout);
        let candidate = policy.lines().find_map(|l| l.trim().strip_prefix("Candidate: "));
        assert!(
            out.status.success() && candidate.is_some_and(|c| c != "(none)"),
            "{stage} stage: Debian {release} has no package {p}: {}",
            show(&out)
        );
        eprintln!("Debian {release} has {p} {} ({stage} stage)", candidate.unwrap());
    }
}

fn docker(args: &[&str]) -> std::io::Result<Output> {
    Command::new("docker").args(args).stdin(Stdio::null()).output()
}

#[test]
fn docker_image_builds_and_runs() {
    match docker(&["info", "--format", "{{.ServerVersion}}"]) {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            let why = String::from_utf8_lossy(&out.stderr)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string();
            return eprintln!(
                "\n*** SKIPPED: the image is not built here: `docker info` reaches no daemon ({why}) ***\n"
            );
        }
        Err(e) => {
            return eprintln!("\n*** SKIPPED: the image is not built here: no docker client ({e}) ***\n")
        }
    }
    let tag = format!("pharos-test:{}", std::process::id());
    let build = docker(&["build", "--tag", &tag, root().to_str().unwrap()]).unwrap();
    assert!(build.status.success(), "docker build: {}", show(&build));
    let run = docker(&["run", "--rm", &tag, "--version"]);
    let _ = docker(&["image", "rm", "--force", &tag]);
    let run = run.unwrap();
    assert!(run.status.success(), "docker run {tag} --version: {}", show(&run));
    let version = String::from_utf8_lossy(&run.stdout);
    assert!(version.starts_with("pharos "), "{version}");
    eprintln!("docker image built and ran: {}", version.trim());
}
