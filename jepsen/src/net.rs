//! The network the nodes live on: one namespace per node, joined by veth
//! pairs to a bridge in the root namespace (where the harness and its
//! clients run, at 10.77.0.254). Every node must live inside a namespace:
//! in the root namespace any non-local address appears to accept TCP here,
//! so a partition made there would not be real.
//!
//! Faults are iptables rules inside a node's namespace: DROP from and to a
//! peer's address (partitions) or `-m statistic --mode random` drops (loss).
//! Client traffic comes from the bridge address and is never dropped, so
//! clients can observe what a cut-off node answers.

use std::process::Command;

use anyhow::{Context, bail};

pub const BRIDGE: &str = "qj-br0";
pub const HOST_ADDR: &str = "10.77.0.254";

pub fn node_addr(i: usize) -> String {
    format!("10.77.0.{i}")
}

pub fn ns(i: usize) -> String {
    format!("qj-n{i}")
}

/// Runs a command; an error carries its stderr.
pub fn sh(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn sh_quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

/// Runs `args` inside node `i`'s namespace.
pub fn in_ns(i: usize, args: &[&str]) -> anyhow::Result<()> {
    let n = ns(i);
    let mut all = vec!["ip", "netns", "exec", n.as_str()];
    all.extend_from_slice(args);
    sh(&all)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Installs iproute2 and iptables when missing (Debian's packages).
pub fn ensure_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = [("ip", "iproute2"), ("iptables", "iptables")]
        .into_iter()
        .filter(|(tool, _)| !have(tool))
        .map(|(_, pkg)| pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("quorate-jepsen: installing {}", missing.join(" "));
    let mut args = vec!["apt-get", "install", "-y", "-q"];
    args.extend(missing);
    if sh(&args).is_err() {
        sh(&["apt-get", "update", "-q"])?;
        sh(&args)?;
    }
    Ok(())
}

/// The namespaces of one run. Dropping it removes them.
#[derive(Debug)]
pub struct Net {
    pub nodes: usize,
}

impl Net {
    /// Creates the bridge and one namespace per node (removing leftovers of
    /// an earlier run first).
    pub fn create(nodes: usize) -> anyhow::Result<Net> {
        ensure_tools()?;
        teardown(9);
        sh(&["ip", "link", "add", BRIDGE, "type", "bridge"])
            .context("cannot create a bridge: the harness needs root and network namespaces")?;
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{HOST_ADDR}/24"),
            "dev",
            BRIDGE,
        ])?;
        sh(&["ip", "link", "set", BRIDGE, "up"])?;
        // A FORWARD policy of DROP (set by container engines) would drop
        // bridged traffic when br_netfilter is loaded.
        sh_quiet(&[
            "iptables", "-I", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT",
        ]);
        let net = Net { nodes };
        for i in 1..=nodes {
            let (v, p) = (format!("qj-v{i}"), format!("qj-p{i}"));
            sh(&["ip", "netns", "add", &ns(i)])?;
            sh(&["ip", "link", "add", &v, "type", "veth", "peer", "name", &p])?;
            sh(&["ip", "link", "set", &p, "netns", &ns(i)])?;
            sh(&["ip", "link", "set", &v, "master", BRIDGE])?;
            sh(&["ip", "link", "set", &v, "up"])?;
            in_ns(
                i,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/24", node_addr(i)),
                    "dev",
                    &p,
                ],
            )?;
            in_ns(i, &["ip", "link", "set", &p, "up"])?;
            in_ns(i, &["ip", "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Cuts the network into `groups`: a node reaches only the nodes of
    /// its own group (clients still reach every node). A node in two groups
    /// (a bridge) reaches both.
    pub fn partition(&self, groups: &[Vec<usize>]) -> anyhow::Result<()> {
        let views: Vec<(usize, Vec<usize>)> = (1..=self.nodes)
            .map(|i| {
                let seen = groups
                    .iter()
                    .filter(|g| g.contains(&i))
                    .flatten()
                    .copied()
                    .collect();
                (i, seen)
            })
            .collect();
        self.views(&views)
    }

    /// Node `i` reaches exactly the nodes in its view (and itself).
    pub fn views(&self, views: &[(usize, Vec<usize>)]) -> anyhow::Result<()> {
        for (i, seen) in views {
            for j in (1..=self.nodes).filter(|j| j != i && !seen.contains(j)) {
                let a = node_addr(j);
                in_ns(*i, &["iptables", "-A", "INPUT", "-s", &a, "-j", "DROP"])?;
                in_ns(*i, &["iptables", "-A", "OUTPUT", "-d", &a, "-j", "DROP"])?;
            }
        }
        Ok(())
    }

    /// Drops each node-to-node packet with probability `p`.
    pub fn loss(&self, p: f64) -> anyhow::Result<()> {
        let prob = format!("{p:.3}");
        for i in 1..=self.nodes {
            for j in (1..=self.nodes).filter(|j| *j != i) {
                in_ns(
                    i,
                    &[
                        "iptables",
                        "-A",
                        "INPUT",
                        "-s",
                        &node_addr(j),
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        &prob,
                        "-j",
                        "DROP",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Sends every TCP connection from a peer node to node `i`'s gRPC port
    /// through the message shim listening on `shim_port` in `i`'s
    /// namespace (see `shim`). Client traffic from the bridge address is
    /// left alone. Installed before the nodes start, so that every peer
    /// connection goes through it (NAT applies to new connections only).
    pub fn redirect_peers(&self, i: usize, grpc_port: u16, shim_port: u16) -> anyhow::Result<()> {
        let port = grpc_port.to_string();
        let nat = |src: &str, target: &[&str]| {
            let mut args = vec![
                "iptables",
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-p",
                "tcp",
                "-s",
                src,
                "--dport",
                &port,
                "-j",
            ];
            args.extend_from_slice(target);
            in_ns(i, &args)
        };
        nat(HOST_ADDR, &["RETURN"])?;
        nat(
            "10.77.0.0/24",
            &["REDIRECT", "--to-ports", &shim_port.to_string()],
        )
    }

    /// Removes every fault rule.
    pub fn heal(&self) -> anyhow::Result<()> {
        for i in 1..=self.nodes {
            in_ns(i, &["iptables", "-F", "INPUT"])?;
            in_ns(i, &["iptables", "-F", "OUTPUT"])?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        teardown(self.nodes.max(9));
    }
}

/// Removes the namespaces, veths and bridge of any run.
pub fn teardown(max_nodes: usize) {
    for i in 1..=max_nodes {
        sh_quiet(&["ip", "netns", "del", &ns(i)]);
        sh_quiet(&["ip", "link", "del", &format!("qj-v{i}")]);
    }
    sh_quiet(&[
        "iptables", "-D", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT",
    ]);
    sh_quiet(&["ip", "link", "del", BRIDGE]);
}
