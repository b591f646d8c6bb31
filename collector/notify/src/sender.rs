//! Delivery: one `Sender` per collector, shared by every tenant's notifiers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rand::Rng;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::{NotifierConfig, SmtpConfig, SmtpSecurity};
use crate::error::NotifyError;
use crate::notification::{AlertState, Notification, one_line, rfc3339};
use crate::payload;
use crate::policy::{ResolveError, TargetPolicy};
use crate::secret::redact;

/// Bounds on one delivery.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    pub policy: TargetPolicy,
    /// Per attempt: connect, send, read the answer.
    pub timeout: Duration,
    /// Attempts in all (1 = no retry). Only transient failures are retried: connect errors,
    /// timeouts, HTTP 5xx and 429, SMTP transient replies. A 4xx or a policy refusal is final.
    pub attempts: u32,
    /// First backoff; doubled each retry, with ±25 % jitter, capped at `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// The most of a receiver's answer that is read; the rest is dropped unread.
    pub max_response_bytes: usize,
    /// The largest request body (the webhook with its base64 chart, or the mail).
    pub max_request_bytes: usize,
}

impl Default for SenderOptions {
    fn default() -> Self {
        Self {
            policy: TargetPolicy::default(),
            timeout: Duration::from_secs(15),
            attempts: 4,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_response_bytes: 64 * 1024,
            max_request_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The outcome of a delivery that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub kind: &'static str,
    /// Attempts it took (1 when the first went through).
    pub attempts: u32,
    /// The HTTP status, or the SMTP reply code of the accepted message.
    pub status: u16,
}

/// Sends notifications. Cheap to clone; holds one HTTP connection pool.
#[derive(Clone)]
pub struct Sender {
    http: reqwest::Client,
    opts: Arc<SenderOptions>,
}

/// The HTTP client's resolver: every connection goes to an address this returned, so checking
/// here is checking at connect time.
struct GuardedResolver(TargetPolicy);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = policy.resolve(&host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

impl Sender {
    pub fn new(opts: SenderOptions) -> Result<Self, NotifyError> {
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver(opts.policy.clone())))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would make the connection for us, past the policy.
            .no_proxy()
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout)
            .user_agent(concat!("FourEyes/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Config {
                kind: "http",
                detail: e.without_url().to_string(),
            })?;
        Ok(Self {
            http,
            opts: Arc::new(opts),
        })
    }

    pub fn options(&self) -> &SenderOptions {
        &self.opts
    }

    /// Delivers one notification, retrying transient failures with backoff. Renders the chart
    /// (if any, and if this notifier carries PNGs) first, off the async threads.
    pub async fn send(
        &self,
        cfg: &NotifierConfig,
        n: &Notification,
    ) -> Result<Delivery, NotifyError> {
        let png = match (&n.chart, cfg) {
            // Slack and PagerDuty take images only by URL.
            (Some(chart), NotifierConfig::Webhook { .. } | NotifierConfig::Smtp(_)) => {
                Some(render_off_thread(chart.clone()).await?)
            }
            _ => None,
        };
        self.send_rendered(cfg, n, png.as_deref()).await
    }

    /// As [`Sender::send`], with the chart already rendered (by [`render_png`](crate::render_png)),
    /// so one alert going to several notifiers renders once. `n.chart` is not looked at.
    pub async fn send_rendered(
        &self,
        cfg: &NotifierConfig,
        n: &Notification,
        png: Option<&[u8]>,
    ) -> Result<Delivery, NotifyError> {
        let png = match cfg {
            NotifierConfig::Webhook { .. } | NotifierConfig::Smtp(_) => png,
            _ => None,
        };
        let kind = cfg.kind();
        let mut attempt = 0;
        let mut delay = self.opts.backoff;
        loop {
            attempt += 1;
            let result = match cfg {
                NotifierConfig::Webhook { url, hmac_key } => {
                    let body = serde_json::to_vec(&payload::webhook(n, png))
                        .map_err(|e| config_err(kind, e.to_string()))?;
                    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
                    let mut headers = vec![(payload::TIMESTAMP_HEADER, ts.to_string())];
                    if let Some(key) = hmac_key {
                        headers.push((
                            payload::SIGNATURE_HEADER,
                            payload::webhook_signature(key.expose().as_bytes(), ts, &body),
                        ));
                    }
                    self.post(cfg, url, body, &headers).await
                }
                NotifierConfig::Slack { url } => {
                    let body = serde_json::to_vec(&payload::slack(n))
                        .map_err(|e| config_err(kind, e.to_string()))?;
                    self.post(cfg, url.expose(), body, &[]).await
                }
                NotifierConfig::PagerDuty { routing_key, url } => {
                    let body = serde_json::to_vec(&payload::pagerduty(n, routing_key.expose()))
                        .map_err(|e| config_err(kind, e.to_string()))?;
                    self.post(cfg, url, body, &[]).await
                }
                NotifierConfig::Smtp(c) => self.mail(c, n, png).await,
            };
            match result {
                Ok(status) => {
                    tracing::info!(kind, org = %n.org, alert = %n.alert_id, attempt, status, "notification delivered");
                    return Ok(Delivery {
                        kind,
                        attempts: attempt,
                        status,
                    });
                }
                Err(e) if e.is_transient() && attempt < self.opts.attempts => {
                    let jitter = rand::thread_rng().gen_range(0.75..1.25);
                    let wait = delay.mul_f64(jitter).min(self.opts.max_backoff);
                    tracing::warn!(kind, org = %n.org, alert = %n.alert_id, attempt, error = %e, ?wait, "notification failed, retrying");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(self.opts.max_backoff);
                }
                Err(e) => {
                    tracing::warn!(kind, org = %n.org, alert = %n.alert_id, attempt, error = %e, "notification failed");
                    return Err(e);
                }
            }
        }
    }

    async fn post(
        &self,
        cfg: &NotifierConfig,
        url: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<u16, NotifyError> {
        let kind = cfg.kind();
        let parsed = reqwest::Url::parse(url)
            .map_err(|_| config_err(kind, "the URL does not parse".into()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(config_err(kind, "the URL must be http or https".into()));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| config_err(kind, "the URL has no host".into()))?;
        let target = format!(
            "{}://{}:{}",
            parsed.scheme(),
            host,
            parsed.port_or_known_default().unwrap_or(0)
        );
        // The client resolves names through the guarded resolver; an address literal skips
        // resolution, so check it here.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            self.opts
                .policy
                .check(host, ip)
                .map_err(|e| NotifyError::Policy {
                    kind,
                    source: e.into(),
                })?;
        }
        if body.len() > self.opts.max_request_bytes {
            return Err(NotifyError::TooLarge {
                kind,
                size: body.len(),
                max: self.opts.max_request_bytes,
            });
        }
        let mut req = self
            .http
            .post(parsed.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let mut resp = req.send().await.map_err(|e| http_err(kind, &target, e))?;
        let status = resp.status().as_u16();
        // Read at most max_response_bytes of the answer.
        let mut answer = Vec::new();
        while answer.len() < self.opts.max_response_bytes {
            match resp.chunk().await {
                Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    if resp.status().is_success() {
                        break;
                    }
                    return Err(http_err(kind, &target, e));
                }
            }
        }
        answer.truncate(self.opts.max_response_bytes);
        if resp.status().is_success() {
            return Ok(status);
        }
        if resp.status().is_redirection() {
            return Err(NotifyError::Redirect {
                kind,
                target,
                status,
            });
        }
        let text = String::from_utf8_lossy(&answer);
        let excerpt: String = text.chars().take(300).collect();
        Err(NotifyError::Status {
            kind,
            target,
            status,
            body: one_line(&redact(&excerpt, &cfg.secrets())),
        })
    }

    async fn mail(
        &self,
        c: &SmtpConfig,
        n: &Notification,
        png: Option<&[u8]>,
    ) -> Result<u16, NotifyError> {
        let kind = "smtp";
        let target = format!("{}:{}", c.host, c.port);
        let addrs = self
            .opts
            .policy
            .resolve(&c.host, c.port)
            .await
            .map_err(|source| NotifyError::Policy { kind, source })?;
        let addr: SocketAddr = *addrs.first().ok_or_else(|| NotifyError::Policy {
            kind,
            source: ResolveError::Lookup {
                host: c.host.clone(),
                detail: "no addresses".into(),
            },
        })?;
        let message = build_mail(c, n, png)?;
        let size = message.formatted().len();
        if size > self.opts.max_request_bytes {
            return Err(NotifyError::TooLarge {
                kind,
                size,
                max: self.opts.max_request_bytes,
            });
        }
        // Connect to the checked address; TLS still verifies the configured host name.
        let tls_params = || {
            let mut b = TlsParameters::builder(c.host.clone());
            if let Some(pem) = &c.ca_pem {
                let cert = Certificate::from_pem(pem.as_bytes())
                    .map_err(|e| config_err(kind, format!("ca_pem: {e}")))?;
                b = b.add_root_certificate(cert);
            }
            b.build().map_err(|e| config_err(kind, e.to_string()))
        };
        let tls = match c.security {
            SmtpSecurity::Tls => Tls::Wrapper(tls_params()?),
            SmtpSecurity::StartTls => Tls::Required(tls_params()?),
            SmtpSecurity::PlainOnLoopback => {
                if !addr.ip().is_loopback() {
                    return Err(config_err(
                        kind,
                        format!(
                            "plain SMTP is allowed only to a loopback address, and {} is not",
                            addr.ip()
                        ),
                    ));
                }
                Tls::None
            }
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
                .port(addr.port())
                .tls(tls)
                .hello_name(ClientId::Domain("foureyes.invalid".into()))
                .timeout(Some(self.opts.timeout));
        if let Some(user) = &c.username {
            let pass = c
                .password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), pass));
        }
        let transport = builder.build();
        match transport.send(message).await {
            Ok(resp) => Ok(u16::from(resp.code())),
            Err(e) => {
                let detail = one_line(&redact(
                    &e.to_string(),
                    &c.password.iter().collect::<Vec<_>>(),
                ));
                // A refused certificate or a 5xx reply will not change on retry.
                if e.is_permanent() || e.is_tls() {
                    Err(NotifyError::Rejected {
                        kind,
                        target,
                        detail,
                    })
                } else if e.is_timeout() {
                    Err(NotifyError::Timeout { kind, target })
                } else if e.is_transient() {
                    Err(NotifyError::Protocol {
                        kind,
                        target,
                        detail,
                    })
                } else {
                    Err(NotifyError::Connect {
                        kind,
                        target,
                        detail,
                    })
                }
            }
        }
    }
}

/// Renders on the blocking pool: a chart takes tens of milliseconds of CPU.
pub async fn render_off_thread(chart: crate::chart::Chart) -> Result<Vec<u8>, NotifyError> {
    tokio::task::spawn_blocking(move || crate::chart::render_png(&chart))
        .await
        .map_err(|e| NotifyError::Chart(crate::chart::ChartError::Draw(e.to_string())))?
        .map_err(NotifyError::from)
}

fn config_err(kind: &'static str, detail: String) -> NotifyError {
    NotifyError::Config { kind, detail }
}

/// Maps a reqwest error without its URL (which may hold a token) and recovers a policy refusal
/// from the resolver.
fn http_err(kind: &'static str, target: &str, e: reqwest::Error) -> NotifyError {
    let e = e.without_url();
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<ResolveError>() {
            return NotifyError::Policy {
                kind,
                source: r.clone(),
            };
        }
        src = s.source();
    }
    if e.is_timeout() {
        return NotifyError::Timeout {
            kind,
            target: target.to_string(),
        };
    }
    // The chain's messages name hyper/IO causes ("connection refused"), never the URL.
    let mut detail = String::new();
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = src {
        if !detail.is_empty() {
            detail.push_str(": ");
        }
        detail.push_str(&s.to_string());
        src = s.source();
    }
    NotifyError::Connect {
        kind,
        target: target.to_string(),
        detail,
    }
}

fn mailbox(kind: &'static str, s: &str) -> Result<Mailbox, NotifyError> {
    s.parse()
        .map_err(|e| config_err(kind, format!("address {s:?}: {e}")))
}

/// A multipart/mixed mail: the plain-text summary and alert JSON, then the chart as
/// `chart.png` when there is one.
fn build_mail(
    c: &SmtpConfig,
    n: &Notification,
    png: Option<&[u8]>,
) -> Result<Message, NotifyError> {
    let kind = "smtp";
    if c.to.is_empty() {
        return Err(config_err(kind, "no recipients".into()));
    }
    let subject = one_line(&format!(
        "[{}] {} ({})",
        n.state.label(),
        n.title,
        n.severity.as_str()
    ));
    let mut builder = Message::builder()
        .from(mailbox(kind, &c.from)?)
        .subject(subject);
    for to in &c.to {
        builder = builder.to(mailbox(kind, to)?);
    }
    let mut text = format!(
        "{}\n\n{}\n\norg: {}\nalert: {}\nseverity: {}\nfired at: {}\n",
        n.state.label(),
        n.text,
        n.org,
        n.alert_id,
        n.severity.as_str(),
        rfc3339(n.fired_at)
    );
    if let Some(t) = n.resolved_at {
        text.push_str(&format!("resolved at: {}\n", rfc3339(t)));
    }
    if let (AlertState::Firing, Some(u)) = (n.state, &n.chart_url) {
        text.push_str(&format!("chart: {u}\n"));
    }
    text.push_str("\nalert details:\n");
    text.push_str(&serde_json::to_string_pretty(&n.body).unwrap_or_default());
    text.push('\n');
    let mut parts = MultiPart::mixed().singlepart(SinglePart::plain(text));
    if let Some(png) = png {
        let ct = ContentType::parse("image/png").map_err(|e| config_err(kind, e.to_string()))?;
        parts = parts.singlepart(Attachment::new("chart.png".to_string()).body(png.to_vec(), ct));
    }
    builder
        .multipart(parts)
        .map_err(|e| config_err(kind, e.to_string()))
}
