//! `foureyes-node probe ...`: one run of one executor, printed. A local diagnostic (no collector
//! involved) and the way network-namespace tests drive the executors from inside a namespace.
//!
//! The exit code is 0 whenever the run happened, whatever its status: the status is the answer,
//! and `--json` gives it to scripts in the same canonical proto3 JSON the collector's API uses.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use foureyes_proto::v1::{
    DnsConfig, DnsRecordType, HttpConfig, HttpMethod, IcmpConfig, IpFamily, ProbeConfig,
    ProbeResult, TcpConfig, Test, TracerouteConfig, TracerouteProtocol, probe_config::Kind,
    probe_result::Detail,
};

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Print the ProbeResult as canonical proto3 JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Milliseconds one attempt may take (default 2000).
    #[arg(long, global = true, value_name = "MS")]
    pub timeout_ms: Option<u32>,
    /// Only IPv4.
    #[arg(short = '4', long = "ipv4", global = true, conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Only IPv6.
    #[arg(short = '6', long = "ipv6", global = true)]
    pub ipv6: bool,
    #[command(subcommand)]
    pub kind: ProbeKind,
}

#[derive(Debug, clap::Subcommand)]
pub enum ProbeKind {
    /// ICMP echo.
    Icmp {
        host: String,
        /// Echoes in the run (default 5).
        #[arg(long)]
        count: Option<u32>,
        /// Milliseconds between echoes (default 10).
        #[arg(long)]
        spacing_ms: Option<u32>,
        /// Echo payload bytes (default 56).
        #[arg(long)]
        payload_size: Option<u32>,
    },
    /// TCP connect.
    Tcp { host: String, port: u32 },
    /// HTTP(S) GET or HEAD.
    Http {
        url: String,
        /// Send HEAD instead of GET.
        #[arg(long)]
        head: bool,
        /// Status the response must have (default: any 2xx or 3xx).
        #[arg(long)]
        expect_status: Option<u32>,
        /// Extra trust anchor: a CA certificate file in DER.
        #[arg(long, value_name = "FILE")]
        ca_der: Option<PathBuf>,
    },
    /// One DNS query.
    Dns {
        server: String,
        name: String,
        /// Record type: A, AAAA, CNAME, MX, TXT, NS, SOA.
        #[arg(long = "type", default_value = "A")]
        record_type: String,
        /// Resolver port.
        #[arg(long, default_value_t = 53)]
        port: u32,
        /// Ask over TCP.
        #[arg(long)]
        tcp: bool,
        /// Fail unless one answer equals this.
        #[arg(long)]
        expect: Option<String>,
    },
    /// Traceroute (ICMP echo probes unless --udp).
    Traceroute {
        host: String,
        /// Highest TTL (default 30).
        #[arg(long)]
        max_hops: Option<u32>,
        /// Probes per hop (default 3).
        #[arg(long)]
        probes_per_hop: Option<u32>,
        /// UDP probes instead of ICMP echo.
        #[arg(long)]
        udp: bool,
    },
}

pub async fn run(args: ProbeArgs) -> Result<()> {
    let test = build_test(&args)?;
    let result = foureyes_probes::run_test(&test).await;
    match print(&args, &result) {
        // `probe ... | head -1` closing the pipe early is not an error worth a backtrace.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("printing the result"),
    }
}

fn print(args: &ProbeArgs, result: &ProbeResult) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, result)?;
        writeln!(out)?;
    } else {
        write_text(&mut out, result)?;
    }
    out.flush()?;
    Ok(())
}

fn build_test(args: &ProbeArgs) -> Result<Test> {
    let family = if args.ipv4 {
        IpFamily::V4
    } else if args.ipv6 {
        IpFamily::V6
    } else {
        IpFamily::Any
    } as i32;
    let mut count = 0;
    let kind = match &args.kind {
        ProbeKind::Icmp {
            host,
            count: c,
            spacing_ms,
            payload_size,
        } => {
            count = c.unwrap_or(0);
            Kind::Icmp(IcmpConfig {
                host: host.clone(),
                family,
                payload_size: payload_size.unwrap_or(0),
                spacing_ms: spacing_ms.unwrap_or(0),
            })
        }
        ProbeKind::Tcp { host, port } => Kind::Tcp(TcpConfig {
            host: host.clone(),
            port: *port,
            family,
        }),
        ProbeKind::Http {
            url,
            head,
            expect_status,
            ca_der,
        } => Kind::Http(HttpConfig {
            url: url.clone(),
            method: if *head {
                HttpMethod::Head
            } else {
                HttpMethod::Get
            } as i32,
            expect_status: expect_status.unwrap_or(0),
            ca_certificate_der: match ca_der {
                Some(path) => {
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
                }
                None => Vec::new(),
            },
            family,
        }),
        ProbeKind::Dns {
            server,
            name,
            record_type,
            port,
            tcp,
            expect,
        } => Kind::Dns(DnsConfig {
            server: server.clone(),
            port: *port,
            query_name: name.clone(),
            record_type: DnsRecordType::from_str_name(&format!(
                "DNS_RECORD_TYPE_{}",
                record_type.to_ascii_uppercase()
            ))
            .with_context(|| format!("unknown record type {record_type:?}"))?
                as i32,
            expect_answer: expect.clone().unwrap_or_default(),
            tcp: *tcp,
        }),
        ProbeKind::Traceroute {
            host,
            max_hops,
            probes_per_hop,
            udp,
        } => Kind::Traceroute(TracerouteConfig {
            host: host.clone(),
            max_hops: max_hops.unwrap_or(0),
            family,
            protocol: if *udp {
                TracerouteProtocol::Udp
            } else {
                TracerouteProtocol::Icmp
            } as i32,
            probes_per_hop: probes_per_hop.unwrap_or(0),
        }),
    };
    Ok(Test {
        id: "local".into(),
        name: "foureyes-node probe".into(),
        timeout_ms: args.timeout_ms.unwrap_or(0),
        count,
        config: Some(ProbeConfig { kind: Some(kind) }),
        ..Default::default()
    })
}

fn write_text(out: &mut impl Write, r: &ProbeResult) -> std::io::Result<()> {
    let status = r.status().as_str_name().trim_start_matches("STATUS_");
    write!(
        out,
        "{status}  latency {:.3} ms  loss {:.1}%",
        r.latency_ms,
        r.loss * 100.0
    )?;
    if !r.error.is_empty() {
        write!(out, "  error: {}", r.error)?;
    }
    writeln!(out)?;
    match &r.detail {
        Some(Detail::Icmp(d)) => {
            let rtts: Vec<String> = d.rtt_ms.iter().map(|v| format!("{v:.3}")).collect();
            writeln!(
                out,
                "icmp {}: {}/{} received, rtt ms [{}]",
                d.address,
                d.received,
                d.sent,
                rtts.join(", ")
            )?;
        }
        Some(Detail::Tcp(d)) => writeln!(out, "tcp {}: connect {:.3} ms", d.address, d.connect_ms)?,
        Some(Detail::Http(d)) => writeln!(
            out,
            "http {}: status {} dns {:.3} connect {:.3} tls {:.3} first-byte {:.3} total {:.3} ms, \
             {} body bytes",
            d.address,
            d.status_code,
            d.dns_ms,
            d.connect_ms,
            d.tls_ms,
            d.first_byte_ms,
            d.total_ms,
            d.body_bytes
        )?,
        Some(Detail::Dns(d)) => {
            writeln!(
                out,
                "dns {}: rcode {} rtt {:.3} ms",
                d.server, d.rcode, d.rtt_ms
            )?;
            for a in &d.answers {
                writeln!(out, "  {a}")?;
            }
        }
        Some(Detail::Traceroute(d)) => {
            writeln!(out, "traceroute {} (reached: {})", d.destination, d.reached)?;
            for h in &d.hops {
                let rtts: Vec<String> = h.rtt_ms.iter().map(|v| format!("{v:.3}")).collect();
                let addr = if h.address.is_empty() {
                    "*"
                } else {
                    &h.address
                };
                writeln!(out, "{:>3}  {addr}  {}", h.ttl, rtts.join(" "))?;
            }
        }
        None => {}
    }
    Ok(())
}
