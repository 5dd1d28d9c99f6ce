//! The deployment files in deploy/ agree with the node they run: the
//! Kubernetes manifest's rendered configs load and pass the node's own
//! checks, its ports, probes, data volume and certificate secret line up
//! with those configs, and the systemd unit and container image use the
//! same ports and data directory. The admission webhook fails closed and
//! reaches the nodes' HTTP port at the path they serve it on.

use std::path::{Path, PathBuf};

use quorate_server::NodeConfig;
use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The documents of deploy/kubernetes/quorate.yaml.
fn manifest() -> Vec<Value> {
    documents("deploy/kubernetes/quorate.yaml")
}

/// A multi-document YAML file's documents.
fn documents(rel: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(&read(rel))
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("YAML: {e}")))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} among the manifest's documents"))
}

fn port(v: &Value, key: &str) -> u16 {
    v[key]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("{key} is not a port: {v:?}"))
}

/// A list of `{name, <key>: port}` as (name, port) pairs.
fn named_ports(list: &Value, key: &str) -> Vec<(String, u16)> {
    list.as_sequence()
        .unwrap_or_else(|| panic!("no list of ports: {list:?}"))
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or("").to_string(), port(p, key)))
        .collect()
}

#[test]
fn the_kubernetes_manifest_runs_nodes_that_start_and_are_probed_on_readyz() {
    let docs = manifest();
    let svc = of_kind(&docs, "Service");
    let cm = of_kind(&docs, "ConfigMap");
    let sts = of_kind(&docs, "StatefulSet");
    let replicas = sts["spec"]["replicas"].as_u64().unwrap_or(0);
    assert!(
        replicas >= 3 && replicas % 2 == 1,
        "an odd number of voters: {replicas}"
    );
    let template = cm["data"]["node.toml.tmpl"]
        .as_str()
        .expect("ConfigMap data node.toml.tmpl");

    // Each pod's rendered config loads and passes the node's checks.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut configs = Vec::new();
    for id in 1..=replicas {
        let path = dir.path().join(format!("node{id}.toml"));
        std::fs::write(&path, template.replace("NODE_ID", &id.to_string())).expect("write");
        let cfg = NodeConfig::load(&path).unwrap_or_else(|e| panic!("pod {id}: {e}"));
        cfg.check().unwrap_or_else(|e| panic!("pod {id}: {e}"));
        assert_eq!(cfg.node_id, id);
        assert!(!cfg.insecure, "the manifest must run mutual TLS");
        configs.push(cfg);
    }
    let cfg = &configs[0];
    let (grpc, http) = (cfg.grpc_addr.port(), cfg.http_addr.port());
    // Every member is a pod of the StatefulSet behind the headless Service,
    // on the gRPC port.
    let service = svc["metadata"]["name"].as_str().unwrap_or_default();
    assert_eq!(sts["spec"]["serviceName"].as_str(), Some(service));
    assert_eq!(svc["spec"]["clusterIP"].as_str(), Some("None"), "headless");
    let name = sts["metadata"]["name"].as_str().unwrap_or_default();
    for (i, m) in cfg.members.iter().enumerate() {
        assert_eq!(m.addr, format!("{name}-{i}.{service}:{grpc}"));
    }
    assert_eq!(cfg.members.len() as u64, replicas);

    // Ports: the Service's and the container's are the config's.
    let svc_ports = named_ports(&svc["spec"]["ports"], "port");
    assert!(svc_ports.contains(&("grpc".into(), grpc)), "{svc_ports:?}");
    assert!(svc_ports.contains(&("http".into(), http)), "{svc_ports:?}");
    let pod = &sts["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let c_ports = named_ports(&c["ports"], "containerPort");
    assert!(c_ports.contains(&("grpc".into(), grpc)), "{c_ports:?}");
    assert!(c_ports.contains(&("http".into(), http)), "{c_ports:?}");

    // Readiness is quorum (/readyz on the HTTP port); liveness is /healthz.
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["port"].as_str(),
        Some("http")
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    let annotations = &sts["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(http.to_string().as_str())
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));

    // The data volume is a claim per pod, mounted where --data-dir points.
    let args = c["args"][0].as_str().unwrap_or_default();
    let data_dir = args
        .split_whitespace()
        .skip_while(|w| *w != "--data-dir")
        .nth(1)
        .expect("--data-dir in the container's command");
    let mounts = c["volumeMounts"].as_sequence().expect("volume mounts");
    let mount = |name: &str| {
        mounts
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no volume mount {name}"))
    };
    assert_eq!(mount("data")["mountPath"].as_str(), Some(data_dir));
    let claims = sts["spec"]["volumeClaimTemplates"]
        .as_sequence()
        .expect("claims");
    assert!(claims.iter().any(|t| t["metadata"]["name"] == "data"));

    // The certificates come from the Secret, read-only, at the paths the
    // config names, one node certificate per pod.
    let certs = mount("certs");
    assert_eq!(certs["readOnly"].as_bool(), Some(true));
    let at = Path::new(certs["mountPath"].as_str().unwrap_or_default());
    let volumes = pod["volumes"].as_sequence().expect("volumes");
    let secret = volumes
        .iter()
        .find(|v| v["name"] == "certs")
        .map(|v| &v["secret"])
        .expect("a certs volume");
    assert_eq!(secret["secretName"].as_str(), Some("quorate-certs"));
    for (i, cfg) in configs.iter().enumerate() {
        let tls = cfg.tls.as_ref().expect("[tls]");
        for f in [&tls.ca_file, &tls.cert_file, &tls.key_file] {
            assert!(
                f.starts_with(at),
                "pod {i}: {} outside {}",
                f.display(),
                at.display()
            );
        }
        assert!(tls.cert_file.ends_with(format!("node-{}.pem", i + 1)));
        assert!(tls.key_file.ends_with(format!("node-{}.key", i + 1)));
    }
}

#[test]
fn the_systemd_unit_and_the_container_use_the_same_ports_and_data_dir() {
    let unit = read("deploy/systemd/quorate@.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    assert!(exec.contains(" node --config "), "{exec}");
    let data = exec
        .split_whitespace()
        .skip_while(|w| *w != "--data-dir")
        .nth(1)
        .expect("--data-dir");
    let writable = unit
        .lines()
        .find_map(|l| l.strip_prefix("ReadWritePaths="))
        .expect("ReadWritePaths");
    assert!(data.starts_with(writable), "{data} is not under {writable}");
    assert!(unit.contains("KillSignal=SIGTERM"));

    let image = read("deploy/container/Containerfile");
    let expose = image
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("EXPOSE");
    let prod = NodeConfig::load(&repo().join("config/production/node.toml"))
        .unwrap_or_else(|e| panic!("config/production/node.toml: {e}"));
    for p in [prod.grpc_addr.port(), prod.http_addr.port()] {
        assert!(
            expose.split_whitespace().any(|e| e == p.to_string()),
            "EXPOSE {expose} lacks {p}"
        );
    }
    assert!(image.contains("VOLUME [\"/var/lib/quorate\"]"));
}

#[test]
fn the_admission_webhook_fails_closed_and_reaches_the_nodes_http_port() {
    let docs = manifest();
    let sts = of_kind(&docs, "StatefulSet");
    let template = of_kind(&docs, "ConfigMap")["data"]["node.toml.tmpl"]
        .as_str()
        .expect("node.toml.tmpl");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("node1.toml");
    std::fs::write(&path, template.replace("NODE_ID", "1")).expect("write");
    let cfg = NodeConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.admission.domain.as_deref(),
        Some("k8s"),
        "the nodes answer admission"
    );

    let adm = documents("deploy/kubernetes/admission.yaml");
    let svc = of_kind(&adm, "Service");
    let hooks = of_kind(&adm, "ValidatingWebhookConfiguration")["webhooks"]
        .as_sequence()
        .expect("webhooks");
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    // Fail-closed: an unreachable, slow or contained quorate refuses.
    assert_eq!(hook["failurePolicy"].as_str(), Some("Fail"));
    assert_eq!(hook["sideEffects"].as_str(), Some("None"));
    assert_eq!(
        hook["admissionReviewVersions"],
        serde_yaml::from_str::<Value>("[v1]").expect("yaml")
    );
    let timeout_ms = hook["timeoutSeconds"].as_u64().unwrap_or(0) * 1000;
    assert!(
        timeout_ms > cfg.commit_timeout_ms && timeout_ms <= 30_000,
        "timeoutSeconds must exceed commit_timeout_ms ({} ms) and be at most 30 s",
        cfg.commit_timeout_ms
    );

    // The webhook calls the admission Service at the path the node serves,
    // and the Service reaches the pods' HTTP port.
    let to = &hook["clientConfig"]["service"];
    assert_eq!(to["name"], svc["metadata"]["name"]);
    assert_eq!(to["namespace"], svc["metadata"]["namespace"]);
    assert_eq!(to["path"].as_str(), Some(quorate_server::admission::PATH));
    let ports = svc["spec"]["ports"].as_sequence().expect("ports");
    let target = ports
        .iter()
        .find(|p| p["port"] == to["port"])
        .expect("the webhook's port on the Service");
    assert_eq!(target["targetPort"].as_str(), Some("http"));
    assert_eq!(
        svc["spec"]["selector"],
        sts["spec"]["template"]["metadata"]["labels"]
    );
    assert_ne!(svc["spec"]["clusterIP"].as_str(), Some("None"));

    // The control plane and quorate itself are never held by quorate.
    let ns = svc["metadata"]["namespace"].as_str().unwrap_or_default();
    let excluded = hook["namespaceSelector"]["matchExpressions"]
        .as_sequence()
        .and_then(|m| {
            m.iter()
                .find(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
        })
        .and_then(|e| e["values"].as_sequence())
        .expect("a namespaceSelector NotIn on kubernetes.io/metadata.name");
    for n in ["kube-system", ns] {
        assert!(excluded.iter().any(|v| v == n), "{n} is not excluded");
    }
    // The certificate the nodes serve must name the Service: the file says
    // how to make it.
    let name = svc["metadata"]["name"].as_str().unwrap_or_default();
    assert!(
        read("deploy/kubernetes/admission.yaml").contains(&format!("--dns {name}.{ns}.svc")),
        "admission.yaml must tell how to issue node certificates for {name}.{ns}.svc"
    );
}

/// Every value under `v` (depth first) for which `pick` says yes.
fn find_all<'a>(v: &'a Value, pick: &dyn Fn(&Value) -> bool, out: &mut Vec<&'a Value>) {
    if pick(v) {
        out.push(v);
    }
    match v {
        Value::Mapping(m) => m.values().for_each(|x| find_all(x, pick, out)),
        Value::Sequence(s) => s.iter().for_each(|x| find_all(x, pick, out)),
        _ => {}
    }
}

#[test]
fn envoy_asks_a_node_over_mutual_tls_and_fails_closed() {
    let doc: Value = serde_yaml::from_str(&read("deploy/envoy/envoy.yaml")).expect("YAML");
    let mut filters = Vec::new();
    find_all(
        &doc,
        &|v| v["name"] == "envoy.filters.http.ext_authz",
        &mut filters,
    );
    assert_eq!(filters.len(), 1, "one ext_authz filter");
    let authz = &filters[0]["typed_config"];
    // Fail-closed: an unreachable or failing quorate is a refusal.
    assert_eq!(authz["failure_mode_allow"].as_bool(), Some(false));
    assert_eq!(authz["transport_api_version"].as_str(), Some("V3"));
    let timeout: f64 = authz["grpc_service"]["timeout"]
        .as_str()
        .and_then(|t| t.strip_suffix('s'))
        .and_then(|t| t.parse().ok())
        .expect("grpc_service.timeout in seconds");
    let prod =
        NodeConfig::load(&repo().join("config/production/node.toml")).expect("production config");
    assert!(
        timeout * 1000.0 > prod.commit_timeout_ms as f64,
        "the check's timeout must exceed commit_timeout_ms"
    );

    // The cluster it calls is the nodes' gRPC port, over mutual TLS with an
    // agent certificate, verifying the name node certificates carry.
    let name = authz["grpc_service"]["envoy_grpc"]["cluster_name"]
        .as_str()
        .expect("envoy_grpc.cluster_name");
    let cluster = doc["static_resources"]["clusters"]
        .as_sequence()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .expect("the ext_authz cluster");
    let mut ports = Vec::new();
    find_all(cluster, &|v| v.get("port_value").is_some(), &mut ports);
    assert!(!ports.is_empty());
    for p in ports {
        assert_eq!(port(p, "port_value"), prod.grpc_addr.port());
    }
    let tls = &cluster["transport_socket"]["typed_config"];
    assert_eq!(
        tls["sni"].as_str(),
        Some(quorate_raft::tls::NODE_SERVER_NAME)
    );
    let ctx = &tls["common_tls_context"];
    assert!(ctx["tls_certificates"][0]["certificate_chain"]["filename"].is_string());
    assert!(ctx["validation_context"]["trusted_ca"]["filename"].is_string());
    let mut h2 = Vec::new();
    find_all(
        cluster,
        &|v| v.get("http2_protocol_options").is_some(),
        &mut h2,
    );
    assert!(!h2.is_empty(), "gRPC needs HTTP/2 to the nodes");

    // Routes choose their domain by the extension the node reads.
    let mut ext = Vec::new();
    find_all(&doc, &|v| v.get("context_extensions").is_some(), &mut ext);
    assert!(!ext.is_empty());
    for e in ext {
        assert!(
            e["context_extensions"]
                .get(quorate_server::envoy::DOMAIN_EXTENSION)
                .is_some()
        );
    }
}
