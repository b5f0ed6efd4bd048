//! The deployment files under `deploy/` agree with the server: every YAML and JSON file
//! parses, the ports are the embedded defaults', the Kubernetes probes are gRPC health
//! checks on the gRPC port, the config file and every `MARQUEE_*` variable are accepted
//! by the server's config loader, and every metric named is one the server exports.

use marquee_proto::v1::{embedding_service_server, model_service_server};
use marquee_server::config::Settings;
use marquee_server::metrics;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(relative: &str) -> String {
    let path = deploy_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The documents of every `.yaml` / `.yml` file under `deploy/`, by path relative to it.
fn yaml_files() -> Vec<(String, Vec<Yaml>)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&deploy_dir(), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(deploy_dir()).unwrap();
            let relative = relative.to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let docs = YamlLoader::load_from_str(&text)
                .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"));
            (relative, docs)
        })
        .collect()
}

/// A single-document YAML file under `deploy/`.
fn yaml(relative: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(relative)).unwrap();
    assert_eq!(docs.len(), 1, "{relative}: expected one document");
    docs.remove(0)
}

/// Whether a file under `deploy/` holds Kubernetes objects (the adapter's Helm values do not).
fn is_k8s_manifest(path: &str) -> bool {
    path.starts_with("k8s/") && !path.starts_with("k8s/prometheus-adapter/")
}

/// Every Kubernetes object under `deploy/k8s/`.
fn k8s_objects() -> Vec<Yaml> {
    yaml_files()
        .into_iter()
        .filter(|(path, _)| is_k8s_manifest(path))
        .flat_map(|(_, docs)| docs)
        .collect()
}

/// The Kubernetes object of that kind and name.
fn k8s_object<'a>(objects: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    objects
        .iter()
        .find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} under deploy/k8s"))
}

/// A string node, or a panic naming `what`.
fn str_of<'a>(value: &'a Yaml, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {value:?}"))
}

/// A sequence node, or a panic naming `what`.
fn list<'a>(value: &'a Yaml, what: &str) -> &'a [Yaml] {
    value
        .as_vec()
        .unwrap_or_else(|| panic!("{what}: expected a list, found {value:?}"))
}

/// The gRPC and metrics ports of the embedded defaults.
fn default_ports() -> (u16, u16) {
    let settings = Settings::load(None).unwrap();
    (settings.listen.port(), settings.metrics_listen.port())
}

/// The port at the end of `host:port` or of a URL.
fn port_of(address: &str) -> u16 {
    let port = address.rsplit(':').next().unwrap();
    port.trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("no port in {address:?}"))
}

/// Loads a config file through the server's loader (embedded defaults, the file, the
/// environment), which refuses unknown keys and ill-typed values.
fn load_config(toml: &str, what: &str) -> Settings {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(toml.as_bytes()).unwrap();
    Settings::load(Some(file.path()))
        .unwrap_or_else(|e| panic!("{what}: refused by the server: {e:#}\n{toml}"))
}

/// Checks a `MARQUEE_*` variable the way the server reads it (strip the prefix,
/// lower-case, nested keys joined by `__`, values parsed as integers or booleans when
/// they are, `plugins` split on commas): as the equivalent TOML through the config
/// loader. Its ports must stay the defaults'.
fn check_env(name: &str, value: &str, file: &str) {
    let key = name
        .strip_prefix("MARQUEE_")
        .unwrap_or_else(|| panic!("{file}: {name} is not a MARQUEE_ variable"))
        .to_lowercase();
    let mut path: Vec<&str> = key.split("__").collect();
    let leaf = path.pop().unwrap();
    let literal = if key == "plugins" {
        let names: Vec<String> = value
            .split(',')
            .map(|p| serde_json::to_string(p).unwrap())
            .collect();
        format!("[{}]", names.join(", "))
    } else if value.parse::<i64>().is_ok() || value == "true" || value == "false" {
        value.to_string()
    } else {
        serde_json::to_string(value).unwrap()
    };
    let table = if path.is_empty() {
        String::new()
    } else {
        format!("[{}]\n", path.join("."))
    };
    let settings = load_config(
        &format!("{table}{leaf} = {literal}\n"),
        &format!("{file}: {name}"),
    );
    assert_eq!(
        (settings.listen.port(), settings.metrics_listen.port()),
        default_ports(),
        "{file}: {name}={value} moves a port away from the embedded defaults"
    );
}

/// Every `marquee_*` identifier in a PromQL expression or any other text.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("marquee_") {
        let preceded_by_word = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let end = rest[at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(rest.len(), |n| at + n);
        if !preceded_by_word {
            names.push(rest[at..end].to_string());
        }
        rest = &rest[end..];
    }
    names
}

/// Asserts a metric name (or a histogram's `_bucket` / `_sum` / `_count` series) is
/// one the server exports.
fn assert_exported(name: &str, file: &str) {
    const EXPORTED: [&str; 7] = [
        metrics::REQUESTS,
        metrics::REQUEST_SECONDS,
        metrics::STAGE_SECONDS,
        metrics::BATCH_SIZE,
        metrics::BATCH_TOKENS,
        metrics::BATCHES,
        metrics::QUEUE_DEPTH,
    ];
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .filter(|base| EXPORTED.contains(base))
        .unwrap_or(name);
    assert!(
        EXPORTED.contains(&base),
        "{file}: {name} is not a metric the server exports ({EXPORTED:?})"
    );
}

/// Asserts every `code="..."` / `code!="..."` matcher names a status as the server
/// labels it (`format!("{code:?}")` of `tonic::Code`: "Ok", "InvalidArgument", ...).
fn assert_code_labels(expr: &str, file: &str) {
    let codes: Vec<String> = (0..=16)
        .map(|n| format!("{:?}", tonic::Code::from_i32(n)))
        .collect();
    for (at, _) in expr.match_indices("code") {
        let rest = expr[at + "code".len()..].trim_start();
        let Some(operand) = rest.strip_prefix("!=").or(rest.strip_prefix('=')) else {
            continue;
        };
        let Some(quoted) = operand.trim_start().strip_prefix('"') else {
            continue;
        };
        let value = &quoted[..quoted.find('"').unwrap()];
        assert!(
            codes.iter().any(|c| c == value),
            "{file}: code label {value:?} is not one the server emits ({codes:?})"
        );
    }
}

/// Every string in a JSON document.
fn json_strings<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile_instructions() -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

#[test]
fn every_deployment_file_parses() {
    let files = yaml_files();
    for expected in [
        "compose.yaml",
        "prometheus/prometheus.yml",
        "k8s/deployment.yaml",
        "k8s/service.yaml",
        "k8s/configmap.yaml",
        "k8s/pdb.yaml",
        "k8s/hpa.yaml",
    ] {
        assert!(
            files.iter().any(|(path, _)| path == expected),
            "deploy/{expected} is missing"
        );
    }
    for (path, docs) in &files {
        assert!(!docs.is_empty(), "{path} is empty");
        for doc in docs {
            assert!(
                doc.as_hash().is_some(),
                "{path}: a document is not a mapping"
            );
            if is_k8s_manifest(path) {
                for field in ["apiVersion", "kind"] {
                    str_of(&doc[field], &format!("{path}: {field}"));
                }
                str_of(&doc["metadata"]["name"], &format!("{path}: metadata.name"));
            }
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("grafana/dashboards/marquee.json"))
            .expect("the Grafana dashboard is not valid JSON");
    assert!(dashboard["panels"]
        .as_array()
        .is_some_and(|p| !p.is_empty()));
}

#[test]
fn compose_and_prometheus_use_the_default_ports_and_real_keys() {
    let (grpc, metrics_port) = default_ports();
    let compose = yaml("compose.yaml");
    let marquee = &compose["services"]["marquee"];

    let published: BTreeSet<u16> = list(&marquee["ports"], "compose marquee.ports")
        .iter()
        .map(|p| match p {
            Yaml::String(short) => port_of(short.split('/').next().unwrap()),
            Yaml::Integer(port) => *port as u16,
            long => long["target"].as_i64().expect("ports: target") as u16,
        })
        .collect();
    assert_eq!(
        published,
        BTreeSet::from([grpc, metrics_port]),
        "compose ports"
    );

    let health = list(&marquee["healthcheck"]["test"], "compose healthcheck");
    let addr = health
        .iter()
        .position(|a| a.as_str() == Some("--addr"))
        .expect("the compose healthcheck passes no --addr");
    assert_eq!(
        port_of(str_of(&health[addr + 1], "--addr")),
        grpc,
        "compose healthcheck"
    );

    let environment = &marquee["environment"];
    let variables: Vec<(String, String)> = match environment {
        Yaml::Hash(map) => map
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Yaml::Integer(n) => n.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => str_of(other, "environment value").to_string(),
                };
                (str_of(k, "environment name").to_string(), value)
            })
            .collect(),
        Yaml::Array(items) => items
            .iter()
            .map(|i| {
                let (k, v) = str_of(i, "environment").split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => Vec::new(),
    };
    for (name, value) in variables.iter().filter(|(n, _)| n.starts_with("MARQUEE_")) {
        check_env(name, value, "compose.yaml");
    }

    for (service, definition) in compose["services"].as_hash().unwrap() {
        for volume in definition["volumes"].as_vec().into_iter().flatten() {
            let source = str_of(volume, "volumes").split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(
                    deploy_dir().join(source).exists(),
                    "compose {service:?} mounts {source}, which does not exist"
                );
            }
        }
    }
    let grafana_mounts = list(
        &compose["services"]["grafana"]["volumes"],
        "grafana volumes",
    );
    let provider = yaml("grafana/provisioning/dashboards/marquee.yaml");
    let dashboards_at = str_of(
        &provider["providers"][0]["options"]["path"],
        "provider path",
    );
    assert!(
        grafana_mounts.iter().any(|m| m
            .as_str()
            .unwrap()
            .starts_with(&format!("./grafana/dashboards:{dashboards_at}"))),
        "the dashboard provider reads {dashboards_at}, where compose mounts no dashboards"
    );

    let prometheus = yaml("prometheus/prometheus.yml");
    let mut scraped = 0;
    for job in list(&prometheus["scrape_configs"], "scrape_configs") {
        for config in list(&job["static_configs"], "static_configs") {
            for target in list(&config["targets"], "targets") {
                let target = str_of(target, "target");
                let (host, _) = target.split_once(':').unwrap();
                assert!(
                    !compose["services"][host].is_badvalue(),
                    "Prometheus scrapes {target}, not a compose service"
                );
                if host == "marquee" {
                    assert_eq!(port_of(target), metrics_port, "Prometheus target {target}");
                    scraped += 1;
                }
            }
        }
    }
    assert_eq!(scraped, 1, "Prometheus scrapes marquee once");
}

#[test]
fn dockerfile_exposes_the_default_ports_and_sets_real_keys() {
    let (grpc, metrics_port) = default_ports();
    let instructions = dockerfile_instructions();
    let arguments = |keyword: &str| -> Vec<String> {
        instructions
            .iter()
            .filter_map(|i| i.strip_prefix(keyword))
            .filter(|rest| rest.starts_with(' '))
            .flat_map(|rest| {
                rest.split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let exposed: BTreeSet<u16> = arguments("EXPOSE")
        .iter()
        .map(|p| p.split('/').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        exposed,
        BTreeSet::from([grpc, metrics_port]),
        "Dockerfile EXPOSE"
    );

    let variables: Vec<(String, String)> = arguments("ENV")
        .iter()
        .filter_map(|a| a.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for name in ["MARQUEE_LISTEN", "MARQUEE_METRICS_LISTEN"] {
        assert!(
            variables.iter().any(|(n, _)| n == name),
            "Dockerfile sets no {name}"
        );
    }
    for (name, value) in variables.iter().filter(|(n, _)| n.starts_with("MARQUEE_")) {
        check_env(name, value, "Dockerfile");
    }
}

#[test]
fn kubernetes_ports_probes_and_references_agree_with_the_server() {
    let (grpc, metrics_port) = default_ports();
    let objects = k8s_objects();
    let deployment = k8s_object(&objects, "Deployment", "marquee");
    let pod = &deployment["spec"]["template"];
    let pod_labels = pod["metadata"]["labels"].as_hash().unwrap();
    let container = &list(&pod["spec"]["containers"], "containers")[0];

    assert!(
        deployment["spec"]["replicas"].is_badvalue(),
        "the HPA owns the replica count; `replicas` in the Deployment resets it on apply"
    );
    assert_eq!(
        pod["spec"]["enableServiceLinks"].as_bool(),
        Some(false),
        "service links put MARQUEE_SERVICE_HOST etc. in the environment, which the server refuses"
    );

    let container_ports: Vec<(&str, u16)> = list(&container["ports"], "container ports")
        .iter()
        .map(|p| {
            (
                str_of(&p["name"], "port name"),
                p["containerPort"].as_i64().unwrap() as u16,
            )
        })
        .collect();
    assert_eq!(container_ports, [("grpc", grpc), ("metrics", metrics_port)]);
    let resolve = |target: &Yaml| -> u16 {
        match target {
            Yaml::Integer(port) => *port as u16,
            name => {
                let name = str_of(name, "targetPort");
                let found = container_ports.iter().find(|(n, _)| *n == name);
                found
                    .unwrap_or_else(|| panic!("no container port named {name}"))
                    .1
            }
        }
    };

    let serving = [
        "",
        embedding_service_server::SERVICE_NAME,
        model_service_server::SERVICE_NAME,
    ];
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let handler = &container[probe];
        for other in ["httpGet", "tcpSocket", "exec"] {
            assert!(
                handler[other].is_badvalue(),
                "{probe} uses {other}, not gRPC"
            );
        }
        assert_eq!(
            handler["grpc"]["port"].as_i64(),
            Some(grpc.into()),
            "{probe}: grpc.port"
        );
        let service = handler["grpc"]["service"].as_str().unwrap_or("");
        assert!(
            serving.contains(&service),
            "{probe}: the server reports no health for {service:?}"
        );
    }

    let annotations = &pod["metadata"]["annotations"];
    let annotated = str_of(&annotations["prometheus.io/port"], "prometheus.io/port");
    assert_eq!(annotated.parse::<u16>().unwrap(), metrics_port);

    for object in &objects {
        let kind = object["kind"].as_str().unwrap();
        let name = object["metadata"]["name"].as_str().unwrap();
        let selector = match kind {
            "Service" => &object["spec"]["selector"],
            "PodDisruptionBudget" | "PodMonitor" => &object["spec"]["selector"]["matchLabels"],
            _ => continue,
        };
        for (key, value) in selector.as_hash().unwrap() {
            assert_eq!(
                pod_labels.get(key),
                Some(value),
                "{kind} {name} selects other pods"
            );
        }
        for port in object["spec"]["ports"].as_vec().into_iter().flatten() {
            let port_name = str_of(&port["name"], "Service port name");
            let expected = match port_name {
                "grpc" => grpc,
                "metrics" => metrics_port,
                other => panic!("{kind} {name}: unexpected port {other}"),
            };
            assert_eq!(
                port["port"].as_i64(),
                Some(expected.into()),
                "{kind} {name} {port_name}"
            );
            assert_eq!(
                resolve(&port["targetPort"]),
                expected,
                "{kind} {name} {port_name}"
            );
        }
        for endpoint in object["spec"]["podMetricsEndpoints"]
            .as_vec()
            .into_iter()
            .flatten()
        {
            assert_eq!(resolve(&endpoint["port"]), metrics_port, "{kind} {name}");
        }
    }

    let hpa = k8s_object(&objects, "HorizontalPodAutoscaler", "marquee");
    assert_eq!(hpa["apiVersion"].as_str(), Some("autoscaling/v2"));
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(target["kind"].as_str(), Some("Deployment"));
    assert_eq!(target["name"], deployment["metadata"]["name"]);

    for variable in container["env"].as_vec().into_iter().flatten() {
        let name = str_of(&variable["name"], "env name");
        if name.starts_with("MARQUEE_") {
            check_env(
                name,
                str_of(&variable["value"], name),
                "k8s/deployment.yaml",
            );
        }
    }
}

#[test]
fn configmap_config_is_accepted_by_the_server() {
    let (grpc, metrics_port) = default_ports();
    let objects = k8s_objects();
    let pod = &k8s_object(&objects, "Deployment", "marquee")["spec"]["template"]["spec"];
    let container = &list(&pod["containers"], "containers")[0];

    let args: Vec<&str> = list(&container["args"], "args")
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--config")
        .expect("the server is started without --config");
    let config_path = Path::new(args[at + 1]);
    let (directory, file) = (
        config_path.parent().unwrap(),
        config_path.file_name().unwrap(),
    );

    let mount = list(&container["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| Path::new(str_of(&m["mountPath"], "mountPath")) == directory)
        .unwrap_or_else(|| panic!("nothing is mounted at {}", directory.display()));
    let volume = list(&pod["volumes"], "volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let configmap_name = str_of(
        &volume["configMap"]["name"],
        "the --config volume's configMap",
    );
    let configmap = k8s_object(&objects, "ConfigMap", configmap_name);
    let toml = str_of(
        &configmap["data"][file.to_str().unwrap()],
        &format!("ConfigMap {configmap_name} key {file:?}"),
    );

    let settings = load_config(toml, &format!("ConfigMap {configmap_name}"));
    assert_eq!(settings.listen.port(), grpc, "ConfigMap listen");
    assert_eq!(
        settings.metrics_listen.port(),
        metrics_port,
        "ConfigMap metrics_listen"
    );
    assert!(
        settings.models.contains_key(&settings.default_model),
        "the ConfigMap serves no model named default_model ({})",
        settings.default_model
    );
}

#[test]
fn metric_names_are_ones_the_server_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("grafana/dashboards/marquee.json")).unwrap();
    let mut strings = Vec::new();
    json_strings(&dashboard, &mut strings);
    let mut used = BTreeSet::new();
    for text in &strings {
        for name in metric_names(text) {
            assert_exported(&name, "grafana/dashboards/marquee.json");
            used.insert(name);
        }
        assert_code_labels(text, "grafana/dashboards/marquee.json");
    }
    for required in [
        metrics::REQUESTS.to_string(),
        format!("{}_bucket", metrics::REQUEST_SECONDS),
        format!("{}_bucket", metrics::STAGE_SECONDS),
        format!("{}_bucket", metrics::BATCH_SIZE),
        metrics::QUEUE_DEPTH.to_string(),
    ] {
        assert!(
            used.contains(&required),
            "the dashboard has no panel on {required}"
        );
    }

    let adapter = yaml("k8s/prometheus-adapter/values.yaml");
    let mut served = BTreeSet::new();
    for rule in list(&adapter["rules"]["custom"], "rules.custom") {
        for field in [
            &rule["seriesQuery"],
            &rule["metricsQuery"],
            &rule["name"]["matches"],
        ] {
            let text = str_of(field, "adapter rule");
            let names = metric_names(text);
            assert!(!names.is_empty(), "adapter rule names no metric: {text}");
            names
                .iter()
                .for_each(|n| assert_exported(n, "prometheus-adapter/values.yaml"));
        }
        served.insert(str_of(&rule["name"]["as"], "adapter rule name.as"));
    }

    let objects = k8s_objects();
    let hpa = k8s_object(&objects, "HorizontalPodAutoscaler", "marquee");
    let hpa_metrics = list(&hpa["spec"]["metrics"], "HPA metrics");
    assert!(!hpa_metrics.is_empty());
    for metric in hpa_metrics {
        if let Some(name) = metric["pods"]["metric"]["name"].as_str() {
            assert!(
                served.contains(name),
                "the HPA scales on {name}, which no adapter rule serves"
            );
        }
    }
}
