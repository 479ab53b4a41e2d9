//! The HTTP client: authentication, limiter, refresh-once, rate-limit retries.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use url::Url;

use crate::auth::{
    parse_token_response, portal_base, token_endpoint, AppCredentials, Credentials, OAuthTokens, TokenStore,
};
use crate::batch::Batch;
use crate::encode::{encode_form, Encoding};
use crate::endpoint::{origin_for_display, parse_checked, WebhookUrl};
use crate::envelope::{decode_response, Envelope};
use crate::error::Error;
use crate::limiter::{Budget, Limiter, LimiterConfig};
use crate::method::{ListMethod, Method, Page};

/// Timeouts of the HTTP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// Whole request, from sending to the last byte of the body. Bitrix24 cloud stops a request at 60 s.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(65),
        }
    }
}

/// Builds a [`Client`].
#[must_use]
pub struct ClientBuilder {
    credentials: Credentials,
    timeouts: Timeouts,
    limiter: Option<Arc<Limiter>>,
    limiter_config: LimiterConfig,
    rate_limit_retries: u32,
    user_agent: String,
}

impl ClientBuilder {
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Bucket parameters for a limiter owned by this client.
    pub fn limiter_config(mut self, config: LimiterConfig) -> Self {
        self.limiter_config = config;
        self
    }

    /// Shares a limiter with other clients of the same portal.
    pub fn shared_limiter(mut self, limiter: Arc<Limiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// How many times a request refused with `QUERY_LIMIT_EXCEEDED` is sent again (after the limiter's
    /// back-off) before [`Error::RateLimited`] is returned. Such a request was not executed, so
    /// repeating it is always safe. Default 8.
    pub fn rate_limit_retries(mut self, retries: u32) -> Self {
        self.rate_limit_retries = retries;
        self
    }

    /// Receives refreshed tokens (application credentials only).
    pub fn token_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        if let Credentials::App { store: slot, .. } = &mut self.credentials {
            *slot = Some(store);
        }
        self
    }

    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let auth = match self.credentials {
            Credentials::Webhook(url) => AuthState::Webhook(url),
            Credentials::App {
                portal_url,
                app,
                tokens,
                store,
            } => {
                if app.client_id.is_empty() {
                    return Err(Error::Config("client_id is empty".into()));
                }
                AuthState::App(Box::new(AppAuth {
                    portal: portal_base(&portal_url)?,
                    token_url: token_endpoint(&app.oauth_url)?,
                    app,
                    store,
                    tokens: tokio::sync::RwLock::new(TokenSlot { tokens, generation: 0 }),
                    refreshing: tokio::sync::Mutex::new(()),
                }))
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(self.timeouts.connect)
            .timeout(self.timeouts.request)
            // A redirect means the portal moved; following it would turn a POST into a GET.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(self.user_agent)
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {}", e.without_url())))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                auth,
                timeouts: self.timeouts,
                limiter: self
                    .limiter
                    .unwrap_or_else(|| Arc::new(Limiter::new(self.limiter_config))),
                rate_limit_retries: self.rate_limit_retries,
            }),
        })
    }
}

/// A Bitrix24 REST client for one portal. Cheap to clone; clones share tokens and limiter.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match &self.inner.auth {
            AuthState::Webhook(url) => url.to_string(),
            AuthState::App(app) => origin_for_display(&app.portal),
        };
        f.debug_struct("Client")
            .field("portal", &target)
            .finish_non_exhaustive()
    }
}

struct Inner {
    http: reqwest::Client,
    auth: AuthState,
    timeouts: Timeouts,
    limiter: Arc<Limiter>,
    rate_limit_retries: u32,
}

enum AuthState {
    Webhook(WebhookUrl),
    App(Box<AppAuth>),
}

struct AppAuth {
    portal: Url,
    token_url: Url,
    app: AppCredentials,
    store: Option<Arc<dyn TokenStore>>,
    tokens: tokio::sync::RwLock<TokenSlot>,
    // One refresh at a time: concurrent callers that all saw `expired_token` share the first refresh.
    refreshing: tokio::sync::Mutex<()>,
}

struct TokenSlot {
    tokens: OAuthTokens,
    generation: u64,
}

/// What a single attempt authenticates with.
enum AttemptAuth {
    Webhook,
    Token { access: String, generation: u64 },
}

impl Client {
    /// A client authenticating with an incoming webhook URL (`https://PORTAL/rest/USER_ID/SECRET/`).
    pub fn webhook(url: &str) -> Result<ClientBuilder, Error> {
        Ok(Self::builder(Credentials::Webhook(WebhookUrl::parse(url)?)))
    }

    /// A client of a local application with its tokens.
    pub fn app(portal_url: impl Into<String>, app: AppCredentials, tokens: OAuthTokens) -> ClientBuilder {
        Self::builder(Credentials::App {
            portal_url: portal_url.into(),
            app,
            tokens,
            store: None,
        })
    }

    pub fn builder(credentials: Credentials) -> ClientBuilder {
        ClientBuilder {
            credentials,
            timeouts: Timeouts::default(),
            limiter: None,
            limiter_config: LimiterConfig::default(),
            rate_limit_retries: 8,
            user_agent: concat!("ringlink-bitrix24/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }

    /// The limiter of this client's portal.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.inner.limiter
    }

    /// What can be sent now without waiting (see [`Budget`]).
    pub fn budget(&self) -> Budget {
        self.inner.limiter.budget()
    }

    /// The current tokens of an application client (`None` for a webhook client).
    pub async fn tokens(&self) -> Option<OAuthTokens> {
        match &self.inner.auth {
            AuthState::Webhook(_) => None,
            AuthState::App(app) => Some(app.tokens.read().await.tokens.clone()),
        }
    }

    /// Calls any method with JSON parameters and returns its `result`.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, Error> {
        Ok(self.call_with(method, &params, Encoding::Json).await?.result)
    }

    /// Calls any method with the chosen encoding and returns the whole envelope (`total`, `next`, `time`).
    pub async fn call_with(&self, method: &str, params: &Value, encoding: Encoding) -> Result<Envelope, Error> {
        self.call_payload(method, Payload::Params(params), encoding).await
    }

    pub(crate) async fn call_payload(
        &self,
        method: &str,
        payload: Payload<'_>,
        encoding: Encoding,
    ) -> Result<Envelope, Error> {
        check_method_name(method)?;
        if let Some(retry_after) = self.inner.limiter.method_blocked_for(method) {
            return Err(Error::OperationTimeLimit {
                method: method.to_owned(),
                retry_after,
            });
        }
        let mut refreshed = false;
        let mut refusals = 0u32;
        // One place in the queue for all attempts: a refused request is not overtaken by later ones.
        let ticket = self.inner.limiter.ticket();
        loop {
            let auth = self.attempt_auth().await?;
            self.inner.limiter.acquire_with(ticket).await;
            let outcome = self.send_once(method, payload, encoding, &auth).await;
            match outcome {
                Ok(envelope) => {
                    self.inner.limiter.on_success();
                    if let Some(time) = &envelope.time {
                        self.inner.limiter.observe_time(method, time);
                    }
                    return Ok(envelope);
                }
                Err(Error::RateLimited { .. }) => {
                    refusals += 1;
                    let pause = self.inner.limiter.on_rate_limited();
                    tracing::warn!(method, refusals, ?pause, "Bitrix24 QUERY_LIMIT_EXCEEDED");
                    if refusals > self.inner.rate_limit_retries {
                        return Err(Error::RateLimited { attempts: refusals });
                    }
                }
                Err(Error::OperationTimeLimit { method: m, .. }) => {
                    let retry_after = self.inner.limiter.on_operation_limit(&m);
                    tracing::warn!(method = %m, ?retry_after, "Bitrix24 OPERATION_TIME_LIMIT");
                    return Err(Error::OperationTimeLimit { method: m, retry_after });
                }
                Err(err) if err.is_expired_token() && !refreshed => {
                    if let AttemptAuth::Token { generation, .. } = auth {
                        refreshed = true;
                        self.refresh_after(generation).await?;
                    } else {
                        return Err(err);
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Sends a typed request (JSON encoding).
    pub async fn send<M: Method>(&self, request: &M) -> Result<M::Output, Error> {
        self.send_with(request, Encoding::Json).await
    }

    /// Sends a typed request with the chosen encoding.
    pub async fn send_with<M: Method>(&self, request: &M, encoding: Encoding) -> Result<M::Output, Error> {
        let envelope = self.call_with(M::NAME, &to_params(request)?, encoding).await?;
        decode_result(M::NAME, envelope.result)
    }

    /// Sends a typed request and keeps the paging fields.
    pub async fn send_page<M: Method>(&self, request: &M) -> Result<Page<M::Output>, Error> {
        let envelope = self.call_with(M::NAME, &to_params(request)?, Encoding::Json).await?;
        Ok(Page {
            total: envelope.total,
            next: envelope.next,
            items: decode_result(M::NAME, envelope.result)?,
        })
    }

    /// Fetches every page of a list method, following `next`.
    pub async fn list_all<M: ListMethod>(&self, mut request: M) -> Result<Vec<M::Item>, Error> {
        let mut all = Vec::new();
        let mut start = 0u64;
        loop {
            request.set_start(start);
            let page = self.send_page(&request).await?;
            let got = page.items.len();
            all.extend(page.items);
            match page.next {
                // `next` must move forward over a non-empty page, or a confused server would loop us forever.
                Some(next) if next > start && got > 0 => start = next,
                _ => return Ok(all),
            }
        }
    }

    /// Refreshes the tokens now (normally done by itself on `expired_token`).
    pub async fn refresh_tokens(&self) -> Result<OAuthTokens, Error> {
        let generation = match &self.inner.auth {
            AuthState::Webhook(_) => return Err(Error::Config("a webhook client has no tokens to refresh".into())),
            AuthState::App(app) => app.tokens.read().await.generation,
        };
        self.refresh_after(generation).await?;
        self.tokens()
            .await
            .ok_or_else(|| Error::Config("a webhook client has no tokens to refresh".into()))
    }

    async fn attempt_auth(&self) -> Result<AttemptAuth, Error> {
        match &self.inner.auth {
            AuthState::Webhook(_) => Ok(AttemptAuth::Webhook),
            AuthState::App(app) => {
                let (access, generation) = {
                    let slot = app.tokens.read().await;
                    (slot.tokens.access_token.expose().to_owned(), slot.generation)
                };
                if !access.is_empty() {
                    return Ok(AttemptAuth::Token { access, generation });
                }
                // Installed with only a refresh token: get an access token first.
                self.refresh_after(generation).await?;
                let slot = app.tokens.read().await;
                Ok(AttemptAuth::Token {
                    access: slot.tokens.access_token.expose().to_owned(),
                    generation: slot.generation,
                })
            }
        }
    }

    /// Refreshes unless another caller already did since `seen_generation`.
    async fn refresh_after(&self, seen_generation: u64) -> Result<(), Error> {
        let AuthState::App(app) = &self.inner.auth else {
            return Ok(());
        };
        let _one_at_a_time = app.refreshing.lock().await;
        let refresh_token = {
            let slot = app.tokens.read().await;
            if slot.generation != seen_generation {
                return Ok(());
            }
            slot.tokens.refresh_token.clone()
        };
        if refresh_token.is_empty() {
            return Err(Error::NoRefreshToken);
        }
        let mut url = app.token_url.clone();
        url.query_pairs_mut()
            .append_pair("grant_type", "refresh_token")
            .append_pair("client_id", &app.app.client_id)
            .append_pair("client_secret", app.app.client_secret.expose())
            .append_pair("refresh_token", refresh_token.expose());
        let timeout = self.inner.timeouts.request;
        let response = self
            .inner
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| Error::from_reqwest(e, timeout))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| Error::from_reqwest(e, timeout))?;
        let tokens = parse_token_response(status, &body, unix_now())?;
        tracing::info!(expires_at = ?tokens.expires_at, "Bitrix24 tokens refreshed");
        if let Some(store) = &app.store {
            if let Err(err) = store.save_tokens(&tokens) {
                tracing::error!(error = %err, "refreshed Bitrix24 tokens could not be saved; they live in memory only");
            }
        }
        let mut slot = app.tokens.write().await;
        slot.tokens = tokens;
        slot.generation += 1;
        Ok(())
    }

    async fn send_once(
        &self,
        method: &str,
        payload: Payload<'_>,
        encoding: Encoding,
        auth: &AttemptAuth,
    ) -> Result<Envelope, Error> {
        let (mut url, token) = match (&self.inner.auth, auth) {
            (AuthState::Webhook(hook), _) => (hook.url().clone(), None),
            (AuthState::App(app), AttemptAuth::Token { access, .. }) => (app.portal.clone(), Some(access.as_str())),
            (AuthState::App(_), AttemptAuth::Webhook) => {
                return Err(Error::Config("application client without a token".into()))
            }
        };
        url.path_segments_mut()
            .map_err(|_| Error::Config("portal URL cannot take a path".into()))?
            .pop_if_empty()
            .push(method);
        // Positional parameters have no room for `auth`: it goes in the query there.
        if let (Some(token), Payload::Params(params)) = (token, payload) {
            if !params.is_object() && !params.is_null() {
                url.query_pairs_mut().append_pair("auth", token);
            }
        }
        let (content_type, body) = match encoding {
            Encoding::Json => ("application/json", payload.json_body(token)?),
            Encoding::Form => (
                "application/x-www-form-urlencoded",
                payload.form_body(token)?.into_bytes(),
            ),
        };
        let request = self
            .inner
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.execute(method, request).await
    }

    async fn execute(&self, method: &str, request: reqwest::RequestBuilder) -> Result<Envelope, Error> {
        let timeout = self.inner.timeouts.request;
        let response = request.send().await.map_err(|e| Error::from_reqwest(e, timeout))?;
        let status = response.status();
        if status.is_redirection() {
            let host = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| Url::parse(v).ok())
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(Error::Redirected {
                status: status.as_u16(),
                host,
            });
        }
        let body = response.bytes().await.map_err(|e| Error::from_reqwest(e, timeout))?;
        decode_response(method, status.as_u16(), &body)
    }

    /// Posts a file to an `uploadUrl` handed out by the portal (multipart, part named `field_name`).
    pub(crate) async fn upload_to(
        &self,
        upload_url: &str,
        field_name: &str,
        file_name: &str,
        content: Vec<u8>,
    ) -> Result<Value, Error> {
        let url = parse_checked(upload_url, "upload").map_err(|e| Error::Upload(e.to_string()))?;
        let part = reqwest::multipart::Part::bytes(content).file_name(file_name.to_owned());
        let form = reqwest::multipart::Form::new().part(field_name.to_owned(), part);
        self.inner.limiter.acquire().await;
        let request = self.inner.http.post(url).multipart(form);
        let envelope = self.execute("upload", request).await?;
        self.inner.limiter.on_success();
        Ok(envelope.result)
    }
}

/// What a call sends: named/positional parameters, or a batch (whose command order must survive).
#[derive(Clone, Copy)]
pub(crate) enum Payload<'a> {
    Params(&'a Value),
    Batch(&'a Batch),
}

impl Payload<'_> {
    fn json_body(self, auth: Option<&str>) -> Result<Vec<u8>, Error> {
        match self {
            Payload::Batch(batch) => batch.json_body(auth),
            Payload::Params(params) => {
                let encoded = match (auth, params) {
                    (Some(token), Value::Object(map)) => {
                        let mut with_auth = map.clone();
                        with_auth.insert("auth".into(), Value::String(token.to_owned()));
                        serde_json::to_vec(&Value::Object(with_auth))
                    }
                    (Some(token), Value::Null) => serde_json::to_vec(&serde_json::json!({ "auth": token })),
                    (_, Value::Null) => Ok(b"{}".to_vec()),
                    (_, other) => serde_json::to_vec(other),
                };
                encoded.map_err(|e| Error::Encode(e.to_string()))
            }
        }
    }

    fn form_body(self, auth: Option<&str>) -> Result<String, Error> {
        match self {
            Payload::Batch(batch) => batch.form_body(auth),
            Payload::Params(params) => {
                let mut body = encode_form(params)?;
                if let (Some(token), true) = (auth, params.is_object() || params.is_null()) {
                    let mut tail = url::form_urlencoded::Serializer::new(String::new());
                    tail.append_pair("auth", token);
                    if !body.is_empty() {
                        body.push('&');
                    }
                    body.push_str(&tail.finish());
                }
                Ok(body)
            }
        }
    }
}

fn check_method_name(method: &str) -> Result<(), Error> {
    let valid = !method.is_empty()
        && method.len() <= 128
        && !method.starts_with('.')
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidMethodName(method.chars().take(64).collect()))
    }
}

pub(crate) fn to_params<T: serde::Serialize>(request: &T) -> Result<Value, Error> {
    match serde_json::to_value(request).map_err(|e| Error::Encode(e.to_string()))? {
        Value::Null => Ok(Value::Object(Map::new())),
        other => Ok(other),
    }
}

pub(crate) fn decode_result<T: DeserializeOwned>(method: &str, result: Value) -> Result<T, Error> {
    serde_json::from_value(result).map_err(|e| Error::Decode {
        method: method.to_owned(),
        reason: e.to_string(),
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names() {
        assert!(check_method_name("telephony.externalcall.register").is_ok());
        assert!(check_method_name("crm.lead.list").is_ok());
        for bad in ["", "../x", "a/b", "a?b", ".x", "a b"] {
            assert!(check_method_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn builder_rejects_insecure_portal() {
        let err = Client::app(
            "http://portal.example/",
            AppCredentials::new("id", "s"),
            OAuthTokens::new("a", "r"),
        )
        .build()
        .unwrap_err();
        assert!(matches!(err, Error::InsecureUrl { what: "portal", .. }), "{err}");
        let err = Client::app(
            "https://portal.example/",
            AppCredentials::new("id", "s").with_oauth_url("http://oauth.example/"),
            OAuthTokens::new("a", "r"),
        )
        .build()
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InsecureUrl {
                    what: "OAuth server",
                    ..
                }
            ),
            "{err}"
        );
        assert!(Client::webhook("http://portal.example/rest/1/x/").is_err());
        let client = Client::webhook("https://portal.example/rest/1/topsecret/")
            .unwrap()
            .build()
            .unwrap();
        assert!(!format!("{client:?}").contains("topsecret"));
    }
}
