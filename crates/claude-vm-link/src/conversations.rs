//! Conversations over the link: `/v1/conversations/...`.

use claude_vm_protocol::api::{
    AgentEnv, Conversation, Decision, EnvApplied, Event, LifecyclePolicy, LifecycleStatus,
    NewConversation, SendMessage, Sent,
};
use http_body_util::BodyExt;
use hyper::{Method, Request};

use crate::{Link, LinkError, check, empty};

/// A stream of transcript events.
pub struct Events {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    end: crate::ConnEnd,
}

impl Events {
    /// The next event; `None` when the stream ends (without `follow`, after the last one).
    pub async fn next(&mut self) -> Result<Option<Event>, LinkError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let event = serde_json::from_slice(&line[..line.len() - 1])
                    .map_err(|e| LinkError::Invalid(format!("bad event: {e}")))?;
                return Ok(Some(event));
            }
            match self.body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
                Some(Err(e)) => return Err(self.end.error(&e).await),
                None => return Ok(None),
            }
        }
    }
}

impl Link {
    pub async fn conversations(&self) -> Result<Vec<Conversation>, LinkError> {
        self.call(Method::GET, "/v1/conversations", None::<&()>)
            .await
    }

    pub async fn conversation(&self, id: &str) -> Result<Conversation, LinkError> {
        self.call(Method::GET, &format!("/v1/conversations/{id}"), None::<&()>)
            .await
    }

    pub async fn new_conversation(&self, req: &NewConversation) -> Result<Conversation, LinkError> {
        self.call(Method::POST, "/v1/conversations", Some(req))
            .await
    }

    pub async fn send_message(&self, id: &str, text: &str) -> Result<Sent, LinkError> {
        self.send_message_once(id, text, None).await
    }

    /// Send under the caller's own message id: sent twice, it is accepted once.
    pub async fn send_message_once(
        &self,
        id: &str,
        text: &str,
        message_id: Option<&str>,
    ) -> Result<Sent, LinkError> {
        self.call(
            Method::POST,
            &format!("/v1/conversations/{id}/messages"),
            Some(&SendMessage {
                text: text.to_owned(),
                message_id: message_id.map(str::to_owned),
            }),
        )
        .await
    }

    /// Give a conversation's agent a new environment (a renewed account).
    pub async fn set_conversation_env(
        &self,
        id: &str,
        env: &AgentEnv,
    ) -> Result<EnvApplied, LinkError> {
        self.call(
            Method::PUT,
            &format!("/v1/conversations/{id}/env"),
            Some(env),
        )
        .await
    }

    /// The daemon's idle-stop timer and policy.
    pub async fn lifecycle(&self) -> Result<LifecycleStatus, LinkError> {
        self.call(Method::GET, "/v1/lifecycle", None::<&()>).await
    }

    /// Give the workspace its idle-stop policy.
    pub async fn set_lifecycle(
        &self,
        policy: &LifecyclePolicy,
    ) -> Result<LifecycleStatus, LinkError> {
        self.call(Method::PUT, "/v1/lifecycle", Some(policy)).await
    }

    /// Wait (at most `wait`, 25 s at most) for the workspace to decide it stops itself.
    pub async fn watch_lifecycle(
        &self,
        wait: std::time::Duration,
    ) -> Result<LifecycleStatus, LinkError> {
        self.call(
            Method::GET,
            &format!("/v1/lifecycle/watch?wait={}", wait.as_secs()),
            None::<&()>,
        )
        .await
    }

    /// The final backup before an idle stop is taken: the workspace may stop.
    pub async fn ready_to_stop(&self) -> Result<LifecycleStatus, LinkError> {
        self.call(Method::POST, "/v1/lifecycle/ready", None::<&()>)
            .await
    }

    pub async fn interrupt(&self, id: &str) -> Result<bool, LinkError> {
        let v: serde_json::Value = self
            .call(
                Method::POST,
                &format!("/v1/conversations/{id}/interrupt"),
                None::<&()>,
            )
            .await?;
        Ok(v["interrupted"].as_bool().unwrap_or(false))
    }

    pub async fn stop_conversation(&self, id: &str) -> Result<Conversation, LinkError> {
        self.call(
            Method::POST,
            &format!("/v1/conversations/{id}/stop"),
            None::<&()>,
        )
        .await
    }

    pub async fn decide(
        &self,
        id: &str,
        approval_id: &str,
        decision: &Decision,
    ) -> Result<Conversation, LinkError> {
        self.call(
            Method::POST,
            &format!("/v1/conversations/{id}/approvals/{approval_id}"),
            Some(decision),
        )
        .await
    }

    /// Transcript events after `after`; with `follow`, keeps delivering new ones.
    pub async fn events(&self, id: &str, after: u64, follow: bool) -> Result<Events, LinkError> {
        self.events_query(id, &format!("after={after}&follow={follow}"))
            .await
    }

    /// Follow a conversation without keeping its workspace up (the server's notifications).
    pub async fn events_background(&self, id: &str, after: u64) -> Result<Events, LinkError> {
        self.events_query(id, &format!("after={after}&follow=true&background=true"))
            .await
    }

    async fn events_query(&self, id: &str, query: &str) -> Result<Events, LinkError> {
        let req = Request::get(format!("/v1/conversations/{id}/events?{query}"))
            .body(empty())
            .map_err(|e| LinkError::Invalid(e.to_string()))?;
        let what = "GET /v1/conversations/…/events";
        let (res, end) = self.within(what, self.send_tracked(req)).await?;
        let res = check(res).await?;
        Ok(Events {
            body: res.into_body(),
            buf: Vec::new(),
            end,
        })
    }
}
