//! The HTTP client: bearer tokens (refreshed one at a time, saved before use), the limiter, 429 retries,
//! the IP-block stop, HAL lists and pagination.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use url::Url;

use crate::auth::{parse_token_answer, Credentials, Hidden, Integration, TokenStore, Tokens};
use crate::error::{from_status, snippet, Error};
use crate::limiter::{Limiter, LimiterConfig};

/// An access token this close to its expiry is refreshed before use, not after a 401.
const EXPIRY_MARGIN_SECS: i64 = 60;
/// A list stops after this many pages even if `_links.next` keeps coming (a confused server).
const MAX_PAGES: usize = 10_000;

/// Timeouts of the HTTP transport (the official library uses 5 s / 20 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(20),
        }
    }
}

/// Builds a [`Client`].
#[must_use]
pub struct ClientBuilder {
    base: Result<Url, Error>,
    credentials: Credentials,
    store: Option<Arc<dyn TokenStore>>,
    timeouts: Timeouts,
    limiter: Option<Arc<Limiter>>,
    limiter_config: LimiterConfig,
    rate_limit_retries: u32,
}

impl ClientBuilder {
    /// Where new token pairs are saved before they are used (OAuth only). Without one they live in memory.
    pub fn token_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    pub fn limiter_config(mut self, config: LimiterConfig) -> Self {
        self.limiter_config = config;
        self
    }

    /// Shares the limiter with other clients of the same integration.
    pub fn shared_limiter(mut self, limiter: Arc<Limiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// How many times a request answered 429 is sent again (after the back-off) before
    /// [`Error::RateLimited`]. A 429 request was not executed, so repeating is safe. Default 5.
    pub fn rate_limit_retries(mut self, retries: u32) -> Self {
        self.rate_limit_retries = retries;
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let base = self.base?;
        let auth = match self.credentials {
            Credentials::LongLived(token) if token.is_empty() => {
                return Err(Error::Config("the long-lived token is empty".into()))
            }
            Credentials::LongLived(token) => Auth::LongLived(token),
            Credentials::OAuth { integration, tokens } => {
                if integration.client_id.is_empty() || integration.redirect_uri.is_empty() {
                    return Err(Error::Config(
                        "the integration's client_id and redirect_uri must both be set".into(),
                    ));
                }
                Auth::OAuth(Box::new(OAuth {
                    integration,
                    store: self.store,
                    slot: tokio::sync::RwLock::new(Slot {
                        tokens,
                        generation: 0,
                        saved: true,
                    }),
                    refreshing: tokio::sync::Mutex::new(()),
                }))
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(self.timeouts.connect)
            .timeout(self.timeouts.request)
            // A redirect would turn a POST into a GET and could carry the bearer elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ringlink-amocrm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {}", e.without_url())))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
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

/// An amoCRM client for one account. Cheap to clone; clones share tokens and limiter.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("account", &self.inner.base.as_str())
            .finish_non_exhaustive()
    }
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    auth: Auth,
    timeouts: Timeouts,
    limiter: Arc<Limiter>,
    rate_limit_retries: u32,
}

enum Auth {
    OAuth(Box<OAuth>),
    LongLived(Hidden),
}

struct OAuth {
    integration: Integration,
    store: Option<Arc<dyn TokenStore>>,
    slot: tokio::sync::RwLock<Slot>,
    // Refresh tokens are single use: two refreshes at once would leave one of them with a dead token.
    refreshing: tokio::sync::Mutex<()>,
}

struct Slot {
    tokens: Tokens,
    /// Bumped at every new pair, so callers that saw a 401 with an older pair don't refresh again.
    generation: u64,
    /// The pair has reached the store; it is not used before.
    saved: bool,
}

/// A successful answer: status and body (empty for 204).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON; `None` for an empty body (204).
    pub fn json(&self, path: &str) -> Result<Option<Value>, Error> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&self.body)
            .map(Some)
            .map_err(|e| Error::InvalidResponse {
                path: path.to_owned(),
                status: self.status,
                reason: format!("body is not JSON ({e})"),
                snippet: snippet(&self.body),
            })
    }
}

impl Client {
    /// An OAuth 2.0 client. `base` is `https://{subdomain}.amocrm.ru` ([`crate::account_url`]).
    /// With empty tokens, call [`Client::exchange_code`] first.
    pub fn oauth(base: &str, integration: Integration, tokens: Tokens) -> ClientBuilder {
        Self::builder(base, Credentials::OAuth { integration, tokens })
    }

    /// A client of a private integration's long-lived token.
    pub fn long_lived(base: &str, token: impl Into<Hidden>) -> ClientBuilder {
        Self::builder(base, Credentials::LongLived(token.into()))
    }

    pub fn builder(base: &str, credentials: Credentials) -> ClientBuilder {
        ClientBuilder {
            base: crate::auth::base_url(base),
            credentials,
            store: None,
            timeouts: Timeouts::default(),
            limiter: None,
            limiter_config: LimiterConfig::default(),
            rate_limit_retries: 5,
        }
    }

    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.inner.limiter
    }

    /// After amoCRM lifted an IP block: sending starts again at once (without waiting for the next probe).
    pub fn resume(&self) {
        self.inner.limiter.resume();
    }

    /// Whether the 403 IP block stops sending (but for the probes), and since when.
    pub fn blocked_since(&self) -> Option<tokio::time::Instant> {
        self.inner.limiter.blocked_since()
    }

    /// amoCRM answered the 403 page: stop sending, but for a probe now and then.
    fn on_blocked(&self, path: &str) {
        let next_probe = self.inner.limiter.block();
        tracing::error!(
            path,
            ?next_probe,
            "amoCRM blocked this IP (403 page): sending stopped; one request probes whether the block is \
             lifted after 5 minutes, then after twice as long each time, at most hourly (calls wait in the outbox)"
        );
    }

    /// amoCRM answered with something other than the 403 page: a block is over.
    fn on_answer(&self) {
        if let Some(lasted) = self.inner.limiter.on_answer() {
            tracing::warn!(
                blocked_for = ?lasted,
                "amoCRM answers this IP again: the IP block is lifted, sending resumes"
            );
        }
    }

    /// The current token pair (OAuth only).
    pub async fn tokens(&self) -> Option<Tokens> {
        match &self.inner.auth {
            Auth::OAuth(oauth) => Some(oauth.slot.read().await.tokens.clone()),
            Auth::LongLived(_) => None,
        }
    }

    fn oauth_state(&self) -> Result<&OAuth, Error> {
        match &self.inner.auth {
            Auth::OAuth(oauth) => Ok(oauth),
            Auth::LongLived(_) => Err(Error::Config("a long-lived token client has no OAuth grants".into())),
        }
    }

    /// Exchanges the one-time `code` of the consent redirect (or the widget install) for the first pair,
    /// which is saved before it is used.
    pub async fn exchange_code(&self, code: &str) -> Result<Tokens, Error> {
        let oauth = self.oauth_state()?;
        let _one_at_a_time = oauth.refreshing.lock().await;
        let tokens = self
            .grant(oauth, json!({"grant_type": "authorization_code", "code": code}))
            .await?;
        self.install(oauth, tokens).await
    }

    /// Refreshes now (normally done when the access token expires or on a 401).
    pub async fn refresh_tokens(&self) -> Result<Tokens, Error> {
        let generation = self.oauth_state()?.slot.read().await.generation;
        self.refresh_after(generation).await?;
        Ok(self.oauth_state()?.slot.read().await.tokens.clone())
    }

    /// Refreshes unless another caller already did since `seen`.
    async fn refresh_after(&self, seen: u64) -> Result<(), Error> {
        let oauth = self.oauth_state()?;
        let _one_at_a_time = oauth.refreshing.lock().await;
        let refresh_token = {
            let slot = oauth.slot.read().await;
            if slot.generation != seen {
                return Ok(());
            }
            slot.tokens.refresh_token.clone()
        };
        if refresh_token.is_empty() {
            return Err(Error::NoRefreshToken);
        }
        let body = json!({"grant_type": "refresh_token", "refresh_token": refresh_token.reveal()});
        let tokens = self.grant(oauth, body).await?;
        self.install(oauth, tokens).await?;
        Ok(())
    }

    /// Holds the new pair in memory (the old refresh token is dead), then saves it. Called under `refreshing`.
    async fn install(&self, oauth: &OAuth, tokens: Tokens) -> Result<Tokens, Error> {
        {
            let mut slot = oauth.slot.write().await;
            slot.tokens = tokens.clone();
            slot.generation += 1;
            slot.saved = false;
        }
        tracing::info!(expires_at = ?tokens.expires_at, "amoCRM tokens renewed");
        self.save(oauth).await?;
        Ok(tokens)
    }

    /// Saves the pair in the slot if it is not saved yet. Called under `refreshing`.
    async fn save(&self, oauth: &OAuth) -> Result<(), Error> {
        let mut slot = oauth.slot.write().await;
        if slot.saved {
            return Ok(());
        }
        if let Some(store) = &oauth.store {
            store.save_tokens(&slot.tokens).map_err(|e| {
                tracing::error!(error = %e, "new amoCRM tokens could not be saved; requests wait");
                Error::TokenPersist(e.to_string())
            })?;
        }
        slot.saved = true;
        Ok(())
    }

    /// One request to the token endpoint.
    async fn grant(&self, oauth: &OAuth, mut body: Value) -> Result<Tokens, Error> {
        let integration = &oauth.integration;
        body["client_id"] = json!(integration.client_id);
        body["client_secret"] = json!(integration.client_secret.reveal());
        body["redirect_uri"] = json!(integration.redirect_uri);
        let url = self.url("/oauth2/access_token")?;
        if !self.inner.limiter.acquire().await {
            return Err(Error::IpBlocked);
        }
        let timeout = self.inner.timeouts.request;
        let response = self
            .inner
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| Error::from_reqwest(e, timeout))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| Error::from_reqwest(e, timeout))?;
        let tokens = parse_token_answer(status, &bytes, unix_now());
        match tokens {
            Err(Error::IpBlocked) => self.on_blocked("/oauth2/access_token"),
            _ => self.on_answer(),
        }
        tokens
    }

    /// The bearer for one attempt, and the token generation it belongs to.
    async fn bearer(&self) -> Result<(String, u64), Error> {
        let oauth = match &self.inner.auth {
            Auth::LongLived(token) => return Ok((token.reveal().to_owned(), 0)),
            Auth::OAuth(oauth) => oauth,
        };
        let (access, expires_at, generation, saved) = {
            let slot = oauth.slot.read().await;
            let t = &slot.tokens;
            (
                t.access_token.reveal().to_owned(),
                t.expires_at,
                slot.generation,
                slot.saved,
            )
        };
        if !saved {
            let _one_at_a_time = oauth.refreshing.lock().await;
            self.save(oauth).await?;
        }
        let expiring = expires_at.is_some_and(|at| at - EXPIRY_MARGIN_SECS <= unix_now());
        if access.is_empty() || expiring {
            self.refresh_after(generation).await?;
            let slot = oauth.slot.read().await;
            return Ok((slot.tokens.access_token.reveal().to_owned(), slot.generation));
        }
        Ok((access, generation))
    }

    fn url(&self, path_and_query: &str) -> Result<Url, Error> {
        self.inner.base.join(path_and_query).map_err(|e| Error::InvalidUrl {
            what: "request path",
            reason: e.to_string(),
        })
    }

    /// Sends one API request (`path` like `/api/v4/calls`, query pairs, JSON body) with the limiter, 429
    /// retries, one refresh on 401, and the IP-block stop. Returns any 2xx answer.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, Error> {
        let mut url = self.url(path)?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        self.send_url(method, url, body).await
    }

    async fn send_url(&self, method: reqwest::Method, url: Url, body: Option<&Value>) -> Result<Answer, Error> {
        let path = url.path().to_owned();
        let timeout = self.inner.timeouts.request;
        let mut refreshed = false;
        let mut refusals = 0u32;
        loop {
            let (bearer, generation) = self.bearer().await?;
            if !self.inner.limiter.acquire().await {
                return Err(Error::IpBlocked);
            }
            let mut request = self.inner.http.request(method.clone(), url.clone()).bearer_auth(bearer);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| Error::from_reqwest(e, timeout))?;
            let status = response.status().as_u16();
            let bytes = response.bytes().await.map_err(|e| Error::from_reqwest(e, timeout))?;
            let error = (!(200..300).contains(&status)).then(|| from_status(&path, status, &bytes));
            if !matches!(error, Some(Error::IpBlocked)) {
                self.on_answer();
            }
            let Some(error) = error else {
                self.inner.limiter.on_success();
                return Ok(Answer {
                    status,
                    body: bytes.to_vec(),
                });
            };
            match error {
                Error::RateLimited { .. } => {
                    refusals += 1;
                    let pause = self.inner.limiter.on_rate_limited();
                    tracing::warn!(path, refusals, ?pause, "amoCRM answered 429");
                    if refusals > self.inner.rate_limit_retries {
                        return Err(Error::RateLimited { attempts: refusals });
                    }
                }
                Error::IpBlocked => {
                    self.on_blocked(&path);
                    return Err(Error::IpBlocked);
                }
                Error::Unauthorized { .. } if !refreshed && matches!(self.inner.auth, Auth::OAuth(_)) => {
                    refreshed = true;
                    self.refresh_after(generation).await?;
                }
                other => return Err(other),
            }
        }
    }

    /// `GET` returning the JSON body, `None` for 204.
    pub async fn get_json(&self, path: &str, query: &[(&str, String)]) -> Result<Option<Value>, Error> {
        self.request(reqwest::Method::GET, path, query, None).await?.json(path)
    }

    /// `POST` of a JSON body returning the JSON answer, `None` for an empty one.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Option<Value>, Error> {
        self.request(reqwest::Method::POST, path, &[], Some(body))
            .await?
            .json(path)
    }

    /// Every item of a HAL list under `_embedded.<key>`, page by page: `page`/`limit` on the first request,
    /// then `_links.next` (same host only) until there is none or a page is empty (204).
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        key: &str,
        limit: u32,
    ) -> Result<Vec<T>, Error> {
        let mut url = self.url(path)?;
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
            pairs
                .append_pair("page", "1")
                .append_pair("limit", &limit.clamp(1, 250).to_string());
        }
        let mut all = Vec::new();
        for _ in 0..MAX_PAGES {
            let answer = self.send_url(reqwest::Method::GET, url.clone(), None).await?;
            let Some(body) = answer.json(path)? else {
                return Ok(all);
            };
            all.extend(embedded::<T>(path, answer.status, &body, key)?);
            let next = body
                .pointer("/_links/next/href")
                .and_then(Value::as_str)
                .map(|href| self.same_origin(path, href))
                .transpose()?;
            match next {
                Some(next) if next != url => url = next,
                _ => return Ok(all),
            }
        }
        Ok(all)
    }

    /// A `_links` URL, only if it points at this account (the bearer must not travel elsewhere).
    fn same_origin(&self, path: &str, href: &str) -> Result<Url, Error> {
        let url = self.inner.base.join(href).map_err(|e| Error::InvalidResponse {
            path: path.to_owned(),
            status: 200,
            reason: format!("_links.next is not a URL ({e})"),
            snippet: href.chars().take(200).collect(),
        })?;
        if url.origin() != self.inner.base.origin() {
            return Err(Error::InvalidResponse {
                path: path.to_owned(),
                status: 200,
                reason: "_links.next points at another host; not followed".into(),
                snippet: href.chars().take(200).collect(),
            });
        }
        Ok(url)
    }
}

/// The items under `_embedded.<key>` of a HAL body (none when the key is absent).
pub(crate) fn embedded<T: DeserializeOwned>(path: &str, status: u16, body: &Value, key: &str) -> Result<Vec<T>, Error> {
    let Some(items) = body.get("_embedded").and_then(|e| e.get(key)) else {
        return Ok(Vec::new());
    };
    serde_json::from_value(items.clone()).map_err(|e| Error::InvalidResponse {
        path: path.to_owned(),
        status,
        reason: format!("_embedded.{key} has an unexpected shape ({e})"),
        snippet: items.to_string().chars().take(200).collect(),
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_checks_what_it_is_given() {
        let integration = || Integration::new("id", "secret", "https://r.example/");
        assert!(
            Client::oauth("http://example.amocrm.ru", integration(), Tokens::default())
                .build()
                .is_err()
        );
        assert!(Client::oauth(
            "https://example.amocrm.ru",
            Integration::new("", "s", "r"),
            Tokens::default()
        )
        .build()
        .is_err());
        assert!(Client::long_lived("https://example.amocrm.ru", "").build().is_err());
        let client = Client::long_lived("https://example.amocrm.ru", "LONG-LIVED-SECRET")
            .build()
            .unwrap();
        assert!(!format!("{client:?}").contains("LONG-LIVED"));
    }

    #[test]
    fn embedded_items_read_or_fail_plainly() {
        let body = json!({"_embedded": {"users": [{"id": 1}, {"id": "2"}]}});
        let ids: Vec<Value> = embedded("/u", 200, &body, "users").unwrap();
        assert_eq!(ids.len(), 2);
        assert!(embedded::<Vec<u64>>("/u", 200, &json!({"_embedded": {"users": 5}}), "users").is_err());
        assert!(embedded::<Value>("/u", 200, &json!({}), "users").unwrap().is_empty());
        let answer = Answer {
            status: 204,
            body: vec![],
        };
        assert!(answer.json("/u").unwrap().is_none());
        let answer = Answer {
            status: 200,
            body: b"<html>".to_vec(),
        };
        assert!(answer.json("/u").is_err());
    }
}
