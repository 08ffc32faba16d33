//! Notifications delivered: each channel's format (ntfy's publish API with title, priority,
//! tags and a click URL; a JSON webhook signed with HMAC-SHA256; Slack's and Discord's
//! incoming webhooks; mail over SMTP) and one delivery attempt. When to notify, retries and
//! deduplication are the server's (an outbox in its database).
//!
//! Channel URLs hold secrets (Slack's and Discord's tokens are in the path), so errors name
//! only the host.

use std::time::Duration;

use claude_vm_core::notify::{Channel, ChannelKind, EventKind, Notification, Tls};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long one delivery may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The webhook signature header: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Claude-VM-Signature";

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{host} answered HTTP {status}")]
    Status { host: String, status: u16 },
    #[error("cannot reach {host}: {message}")]
    Unreachable { host: String, message: String },
    #[error("mail to {host} failed: {message}")]
    Mail { host: String, message: String },
    #[error("invalid channel: {0}")]
    Invalid(String),
}

/// The host of a URL (what errors may show of it).
pub fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .to_owned()
}

/// ntfy tags (emoji short codes) by event.
fn tags(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Approval => "raised_hand",
        EventKind::TurnFinished => "white_check_mark",
        EventKind::Failed => "x",
        EventKind::IdleStopped => "zzz",
        EventKind::BackupFailed => "warning",
        EventKind::Test => "bell",
    }
}

/// A request to send: where, headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPost {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Header values must be one line of visible characters (ntfy takes UTF-8 titles, but a
/// header cannot hold a newline an agent's text could carry).
fn header_value(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The JSON document a webhook receives.
pub fn webhook_payload(n: &Notification) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": n.id,
        "event": n.kind.as_str(),
        "workspace": n.workspace,
        "conversation": n.conversation,
        "title": n.title,
        "body": n.body,
        "link": n.link,
        "at": n.at,
    }))
    .expect("serializable")
}

/// `sha256=<hex>`: HMAC-SHA256 of `body` with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn text_with_link(n: &Notification, link: impl Fn(&str) -> String) -> String {
    let mut text = n.body.clone();
    if let Some(l) = &n.link {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&link(l));
    }
    text
}

/// The HTTP request for an HTTP channel (`None` for mail).
pub fn http_post(channel: &Channel, n: &Notification) -> Option<HttpPost> {
    let json = || ("content-type".to_owned(), "application/json".to_owned());
    match &channel.kind {
        ChannelKind::Ntfy { url, token } => {
            let mut headers = vec![
                ("Title".to_owned(), header_value(&n.title)),
                ("Priority".to_owned(), n.kind.priority().to_string()),
                ("Tags".to_owned(), tags(n.kind).to_owned()),
                ("X-Claude-VM-Event".to_owned(), n.id.clone()),
            ];
            if let Some(l) = &n.link {
                headers.push(("Click".to_owned(), header_value(l)));
            }
            if let Some(t) = token {
                headers.push(("Authorization".to_owned(), format!("Bearer {t}")));
            }
            Some(HttpPost {
                url: url.clone(),
                headers,
                body: n.body.clone().into_bytes(),
            })
        }
        ChannelKind::Webhook { url, secret } => {
            let body = webhook_payload(n);
            let mut headers = vec![json(), ("X-Claude-VM-Event".to_owned(), n.id.clone())];
            if let Some(s) = secret {
                headers.push((SIGNATURE_HEADER.to_owned(), signature(s, &body)));
            }
            Some(HttpPost {
                url: url.clone(),
                headers,
                body,
            })
        }
        ChannelKind::Slack { url } => {
            // Slack's mrkdwn: *bold*, <url|label>; &, < and > escaped as it asks.
            let esc = |s: &str| {
                s.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            };
            let mut text = format!("*{}*", esc(&n.title));
            let body = text_with_link(
                &Notification {
                    body: esc(&n.body),
                    ..n.clone()
                },
                |l| format!("<{l}|Open in claude-vm>"),
            );
            if !body.is_empty() {
                text.push('\n');
                text.push_str(&body);
            }
            Some(HttpPost {
                url: url.clone(),
                headers: vec![json()],
                body: serde_json::to_vec(&serde_json::json!({ "text": text }))
                    .expect("serializable"),
            })
        }
        ChannelKind::Discord { url } => {
            let mut content = format!("**{}**", n.title);
            let body = text_with_link(n, |l| l.to_owned());
            if !body.is_empty() {
                content.push('\n');
                content.push_str(&body);
            }
            let content: String = content.chars().take(2000).collect();
            Some(HttpPost {
                url: url.clone(),
                headers: vec![json()],
                // No @everyone or role pings, whatever an agent wrote.
                body: serde_json::to_vec(&serde_json::json!({
                    "content": content,
                    "allowed_mentions": { "parse": [] },
                }))
                .expect("serializable"),
            })
        }
        ChannelKind::Email { .. } => None,
    }
}

/// One delivery attempt.
pub async fn send(channel: &Channel, n: &Notification) -> Result<(), SendError> {
    match http_post(channel, n) {
        Some(post) => send_http(post).await,
        None => send_mail(channel, n).await,
    }
}

async fn send_http(post: HttpPost) -> Result<(), SendError> {
    let host = host_of(&post.url);
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| SendError::Invalid(e.to_string()))?;
    let mut req = client.post(&post.url).body(post.body);
    for (k, v) in &post.headers {
        req = req.header(k, v);
    }
    let res = req.send().await.map_err(|e| SendError::Unreachable {
        host: host.clone(),
        // reqwest's message names the URL; say what kind of failure it was instead.
        message: if e.is_timeout() {
            format!("no answer within {}s", TIMEOUT.as_secs())
        } else if e.is_connect() {
            "connection failed".to_owned()
        } else {
            "the request failed".to_owned()
        },
    })?;
    let status = res.status().as_u16();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(SendError::Status { host, status })
    }
}

async fn send_mail(channel: &Channel, n: &Notification) -> Result<(), SendError> {
    use lettre::message::{Mailbox, header::ContentType};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let ChannelKind::Email {
        host,
        port,
        tls,
        username,
        password,
        from,
        to,
    } = &channel.kind
    else {
        return Err(SendError::Invalid("not a mail channel".to_owned()));
    };
    let fail = |message: String| SendError::Mail {
        host: host.clone(),
        message,
    };
    let mailbox = |a: &str| {
        a.parse::<Mailbox>()
            .map_err(|e| SendError::Invalid(format!("{a:?}: {e}")))
    };
    let mut builder = Message::builder()
        .from(mailbox(from)?)
        .subject(format!("[claude-vm] {}", header_value(&n.title)))
        .header(ContentType::TEXT_PLAIN);
    for a in to {
        builder = builder.to(mailbox(a)?);
    }
    let message = builder
        .body(text_with_link(n, |l| format!("\n{l}")))
        .map_err(|e| SendError::Invalid(e.to_string()))?;
    let mut transport = match tls {
        Tls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
        Tls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
        Tls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            host,
        )),
    }
    .map_err(|e| fail(e.to_string()))?
    .timeout(Some(TIMEOUT));
    if let Some(p) = port {
        transport = transport.port(*p);
    }
    if let (Some(u), Some(p)) = (username, password) {
        transport = transport.credentials(Credentials::new(u.clone(), p.clone()));
    }
    transport
        .build()
        .send(message)
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n() -> Notification {
        Notification {
            id: "c1:7".into(),
            kind: EventKind::TurnFinished,
            workspace: "bold-fire-1".into(),
            conversation: Some("c1".into()),
            title: "bold-fire-1: turn finished\nforged".into(),
            body: "Done <@everyone> & more".into(),
            link: Some("https://cvm.example/c/c1".into()),
            at: "2026-12-02T10:00:00Z".into(),
        }
    }

    fn channel(yaml: &str) -> Channel {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn each_channel_gets_its_own_format() {
        let ntfy = http_post(
            &channel("type: ntfy\nurl: https://ntfy.sh/t\ntoken: tk_1"),
            &n(),
        )
        .unwrap();
        let h = |p: &HttpPost, k: &str| {
            p.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            h(&ntfy, "Title").unwrap(),
            "bold-fire-1: turn finished forged"
        );
        assert_eq!(h(&ntfy, "Priority").unwrap(), "3");
        assert_eq!(h(&ntfy, "Click").unwrap(), "https://cvm.example/c/c1");
        assert_eq!(h(&ntfy, "Authorization").unwrap(), "Bearer tk_1");
        assert_eq!(ntfy.body, b"Done <@everyone> & more");

        let hook = http_post(
            &channel("type: webhook\nurl: https://h/x\nsecret: s3"),
            &n(),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&hook.body).unwrap();
        assert_eq!(v["event"], "turn_finished");
        assert_eq!(v["id"], "c1:7");
        assert_eq!(
            h(&hook, SIGNATURE_HEADER).unwrap(),
            signature("s3", &hook.body)
        );

        let slack = http_post(
            &channel("type: slack\nurl: https://hooks.slack.com/s/T/B/x"),
            &n(),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&slack.body).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(text.contains("Done &lt;@everyone&gt; &amp; more"), "{text}");
        assert!(
            text.contains("<https://cvm.example/c/c1|Open in claude-vm>"),
            "{text}"
        );

        let discord = http_post(
            &channel("type: discord\nurl: https://discord.com/api/webhooks/1/x"),
            &n(),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&discord.body).unwrap();
        assert_eq!(v["allowed_mentions"]["parse"], serde_json::json!([]));
        assert!(v["content"].as_str().unwrap().starts_with("**bold-fire-1"));

        assert!(http_post(&channel("type: email\nhost: h\nfrom: a@b\nto: [c@d]"), &n()).is_none());
    }

    #[test]
    fn the_signature_is_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn errors_show_the_host_only() {
        assert_eq!(
            host_of("https://hooks.slack.com/services/T/B/secret"),
            "hooks.slack.com"
        );
        assert_eq!(host_of("http://user:pw@10.0.0.1:8080/x?y"), "10.0.0.1:8080");
    }
}
