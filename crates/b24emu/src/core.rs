//! The request pipeline shared by the HTTP server and the library API:
//! faults → authentication → leaky bucket → method lookup → scope → auth type → operating limit → method.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Instant;

use chrono::{DateTime, Offset, Utc};
use serde_json::Value;
use tokio::sync::watch;

use crate::api::{self, ApiError, Operating, Reply, SystemError, Timing};
use crate::auth::{lifetime, AccessCheck, TokenInfo, TokenStore};
use crate::clock::Clock;
use crate::config::{BadTokenError, EmulatorConfig, MissingScopeError, Permission};
use crate::fault::{Fault, FaultCounts, RandomOutcome};
use crate::limits::{LeakyBucket, OperatingLimits};
use crate::methods::{self, Restriction};
use crate::params::PValue;
use crate::record::{AuthMode, CardAction, CardCause, CardEvent, CardTimeline, Delivery, RecordedRequest};
use crate::state::Portal;

/// Everything behind one lock, so a method sees and changes the portal atomically.
#[derive(Debug)]
pub(crate) struct World {
    pub portal: Portal,
    pub tokens: TokenStore,
    pub bucket: LeakyBucket,
    pub operating: OperatingLimits,
    pub timeline: CardTimeline,
}

pub(crate) struct Core {
    pub cfg: EmulatorConfig,
    pub clock: Clock,
    pub world: Mutex<World>,
    log: Mutex<Vec<RecordedRequest>>,
    next_seq: AtomicU64,
    pub deliveries: Mutex<Vec<Delivery>>,
    fault: Mutex<Option<Fault>>,
    pub fault_generation: AtomicU64,
    /// Requests hit by [`Fault::Random`] so far, by kind.
    fault_counts: Mutex<FaultCounts>,
    pub base_url: OnceLock<String>,
    pub http: reqwest::Client,
    pub initial_access_token: String,
    pub initial_refresh_token: String,
    /// True while the `Down` fault holds: the accept loop closes the portal port.
    pub down_tx: watch::Sender<bool>,
    weak_self: OnceLock<Weak<Core>>,
}

/// Who is calling and with which rights.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub mode: AuthMode,
    pub user_id: u64,
    pub scope: Vec<String>,
    /// Identity for the operating limit and the 30-minute rule: `app:<client_id>` or `webhook:<user>`.
    pub principal: String,
    pub access_token: Option<String>,
}

impl Caller {
    pub fn is_webhook(&self) -> bool {
        matches!(self.mode, AuthMode::Webhook { .. })
    }
}

/// One REST request as parsed by the HTTP layer.
#[derive(Debug)]
pub(crate) struct RestRequest {
    /// Method name from the URL, without `.json`.
    pub method: String,
    /// `(user_id, secret)` from a webhook URL.
    pub webhook: Option<(String, String)>,
    pub params: PValue,
    /// Files of a multipart body: (field name, file name, bytes).
    pub files: Vec<(String, String, Vec<u8>)>,
}

/// Context a method runs in.
pub(crate) struct Ctx<'a> {
    pub core: &'a Core,
    pub caller: &'a Caller,
    pub now: DateTime<Utc>,
    pub seq: u64,
}

impl Ctx<'_> {
    pub fn card(&self, world: &mut World, user_id: u64, call_id: &str, action: CardAction, cause: CardCause) {
        world.timeline.events.push(CardEvent {
            at: self.now,
            user_id,
            call_id: call_id.to_owned(),
            action,
            cause,
            request_seq: Some(self.seq),
        });
    }
}

impl Core {
    pub fn new(cfg: EmulatorConfig) -> Self {
        let offset_secs = cfg.portal.utc_offset_minutes.clamp(-18 * 60, 18 * 60) * 60;
        let offset = chrono::FixedOffset::east_opt(offset_secs).unwrap_or_else(|| Utc.fix());
        let start = cfg.clock.start.map_or_else(Utc::now, |s| s.with_timezone(&Utc));
        let clock = Clock::new(start, cfg.clock.frozen, offset);
        let now = clock.now();
        let mut portal = Portal::from_config(&cfg, now);
        let access = cfg
            .app
            .access_token
            .clone()
            .unwrap_or_else(|| portal.next_hash("access"));
        let refresh = cfg
            .app
            .refresh_token
            .clone()
            .unwrap_or_else(|| portal.next_hash("refresh"));
        let mut tokens = TokenStore::default();
        tokens.access.insert(
            access.clone(),
            TokenInfo {
                user_id: cfg.app.user_id,
                expires_at: now + lifetime(cfg.app.access_token_lifetime_secs),
            },
        );
        tokens.refresh.insert(
            refresh.clone(),
            TokenInfo {
                user_id: cfg.app.user_id,
                expires_at: now + lifetime(cfg.app.refresh_token_lifetime_secs),
            },
        );
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(cfg.events.delivery_timeout_ms.max(1)))
            .build()
            .unwrap_or_default();
        Self {
            world: Mutex::new(World {
                portal,
                tokens,
                bucket: LeakyBucket::new(),
                operating: OperatingLimits::default(),
                timeline: CardTimeline::default(),
            }),
            cfg,
            clock,
            log: Mutex::new(Vec::new()),
            next_seq: AtomicU64::new(1),
            deliveries: Mutex::new(Vec::new()),
            fault: Mutex::new(None),
            fault_generation: AtomicU64::new(0),
            fault_counts: Mutex::new(FaultCounts::default()),
            base_url: OnceLock::new(),
            http,
            initial_access_token: access,
            initial_refresh_token: refresh,
            down_tx: watch::channel(false).0,
            weak_self: OnceLock::new(),
        }
    }

    pub fn into_arc(self) -> Arc<Self> {
        let arc = Arc::new(self);
        let _ = arc.weak_self.set(Arc::downgrade(&arc));
        arc
    }

    /// A strong handle for background work (record downloads).
    pub fn arc(&self) -> Option<Arc<Core>> {
        self.weak_self.get().and_then(Weak::upgrade)
    }

    /// Set or clear a fault; with `duration` it clears itself unless replaced meanwhile.
    pub fn apply_fault(self: &Arc<Self>, fault: Option<Fault>, duration: Option<std::time::Duration>) {
        let down = matches!(fault, Some(Fault::Down));
        let generation = self.set_fault(fault);
        self.down_tx.send_replace(down);
        if let Some(d) = duration {
            let core = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                if core.fault_generation.load(Ordering::SeqCst) == generation {
                    core.set_fault(None);
                    core.down_tx.send_replace(false);
                }
            });
        }
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        // The data stays consistent per method even if a panic poisoned the lock; keep serving.
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn base_url(&self) -> &str {
        self.base_url.get().map_or("http://127.0.0.1", String::as_str)
    }

    pub fn fault(&self) -> Option<Fault> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn fault_counts(&self) -> FaultCounts {
        *self.fault_counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fate of request `seq` under [`Fault::Random`] (`Pass` under any other fault), counted.
    fn random_fault(&self, seq: u64) -> RandomOutcome {
        let Some(Fault::Random(odds)) = self.fault() else {
            return RandomOutcome::Pass;
        };
        let outcome = odds.draw(seq);
        let mut counts = self.fault_counts.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            RandomOutcome::Pass => {}
            RandomOutcome::RateLimited => counts.rate_limited += 1,
            RandomOutcome::ServerError(500) => counts.server_errors += 1,
            RandomOutcome::ServerError(_) => counts.bad_gateways += 1,
            RandomOutcome::Slow(_) => counts.delayed += 1,
        }
        outcome
    }

    pub fn set_fault(&self, fault: Option<Fault>) -> u64 {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
        self.fault_generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn take_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::SeqCst)
    }

    pub fn record(&self, entry: RecordedRequest) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let pos = log.partition_point(|e| e.seq < entry.seq);
        log.insert(pos, entry);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn clear_requests(&self) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn push_delivery(&self, d: Delivery) {
        self.deliveries.lock().unwrap_or_else(|p| p.into_inner()).push(d);
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn revision(&self) -> crate::config::StatusRevision {
        self.cfg.conflicts.status_revision
    }

    /// Authenticate a request from its webhook path or its `auth` parameter.
    fn authenticate(
        &self,
        webhook: Option<&(String, String)>,
        auth: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Caller, ApiError> {
        let revoked = matches!(self.fault(), Some(Fault::TokenRevoked));
        let rev = self.revision();
        if let Some((uid, secret)) = webhook {
            let hook = &self.cfg.webhook;
            if revoked || uid.parse::<u64>().ok() != Some(hook.user_id) || *secret != hook.secret {
                return Err(SystemError::InvalidCredentials.to_error(rev));
            }
            return Ok(Caller {
                mode: AuthMode::Webhook { user_id: hook.user_id },
                user_id: hook.user_id,
                scope: hook.scope.clone(),
                principal: format!("webhook:{}", hook.user_id),
                access_token: None,
            });
        }
        let Some(token) = auth.filter(|t| !t.is_empty()) else {
            return Err(SystemError::NoAuthFound.to_error(rev));
        };
        let bad_token = || match self.cfg.conflicts.bad_token_error {
            BadTokenError::InvalidToken => SystemError::InvalidToken.to_error(rev),
            BadTokenError::NoAuthFound => SystemError::NoAuthFound.to_error(rev),
        };
        if revoked {
            return Err(bad_token());
        }
        match self.world().tokens.check_access(&token, now) {
            AccessCheck::Valid(user_id) => Ok(Caller {
                mode: AuthMode::OAuth { user_id },
                user_id,
                scope: self.cfg.app.scope.clone(),
                principal: format!("app:{}", self.cfg.app.client_id),
                access_token: Some(token),
            }),
            AccessCheck::Expired => Err(SystemError::ExpiredToken.to_error(rev)),
            AccessCheck::Unknown => Err(bad_token()),
        }
    }

    /// Handle one REST request end to end and record it. Returns HTTP status and JSON body.
    pub async fn handle_rest(&self, mut req: RestRequest) -> (u16, Value) {
        let started = Instant::now();
        let start = self.clock.now();
        let seq = self.take_seq();
        let method = normalize_method(&req.method);
        let auth = req.params.remove("auth").and_then(|v| v.as_string());
        let params_json = req.params.to_json();

        let outcome = self.run_request(seq, &method, &req, auth, start, started).await;
        let (status, body, mode) = match outcome {
            Ok((reply, operating, mode)) => {
                let timing = Timing {
                    start,
                    finish: self.clock.now(),
                    processing: started.elapsed().as_secs_f64(),
                };
                let time = api::time_block(&self.clock, timing, operating);
                (200, api::success_body(&reply, time), mode)
            }
            Err((err, mode)) => (err.status, err.body(), mode),
        };
        self.record(RecordedRequest {
            seq,
            at: start,
            method,
            params: params_json,
            auth: mode,
            status,
            response: body.clone(),
            batch_parent: None,
        });
        (status, body)
    }

    async fn run_request(
        &self,
        seq: u64,
        method: &str,
        req: &RestRequest,
        auth: Option<String>,
        now: DateTime<Utc>,
        started: Instant,
    ) -> Result<(Reply, Option<Operating>, AuthMode), (ApiError, AuthMode)> {
        match self.random_fault(seq) {
            RandomOutcome::Pass => {}
            RandomOutcome::Slow(delay) => tokio::time::sleep(delay).await,
            RandomOutcome::RateLimited => {
                return Err((
                    SystemError::QueryLimitExceeded.to_error(self.revision()),
                    AuthMode::None,
                ))
            }
            RandomOutcome::ServerError(status) => {
                return Err((
                    SystemError::InternalServerError(status).to_error(self.revision()),
                    AuthMode::None,
                ))
            }
        }
        let failing = match self.fault() {
            Some(Fault::ServerError(status)) => Some(status),
            Some(Fault::MethodError {
                method: failing,
                status,
            }) if failing.eq_ignore_ascii_case(method) => Some(status),
            Some(Fault::RateLimitStorm) => {
                return Err((
                    SystemError::QueryLimitExceeded.to_error(self.revision()),
                    AuthMode::None,
                ));
            }
            _ => None,
        };
        if let Some(status) = failing {
            let status = if (500..=599).contains(&status) { status } else { 500 };
            return Err((
                SystemError::InternalServerError(status).to_error(self.revision()),
                AuthMode::None,
            ));
        }
        let caller = self
            .authenticate(req.webhook.as_ref(), auth, now)
            .map_err(|e| (e, AuthMode::None))?;
        let mode = caller.mode.clone();
        let admitted = {
            let mut w = self.world();
            w.bucket.admit(now, &self.cfg.limits)
        };
        if !admitted {
            return Err((SystemError::QueryLimitExceeded.to_error(self.revision()), mode));
        }
        let ctx = Ctx {
            core: self,
            caller: &caller,
            now,
            seq,
        };
        let result = match method {
            "batch" => methods::batch::run(&ctx, &req.params, started).await.map(|r| (r, None)),
            "upload" => methods::telephony::upload(&ctx, &req.params, &req.files).map(|r| (r, None)),
            _ => self.call_method(&ctx, method, &req.params).await,
        };
        result.map(|(r, op)| (r, op, mode.clone())).map_err(|e| (e, mode))
    }

    /// Run one method (top level or inside a batch) with its scope, auth-type and operating checks.
    pub async fn call_method(
        &self,
        ctx: &Ctx<'_>,
        method: &str,
        params: &PValue,
    ) -> Result<(Reply, Option<Operating>), ApiError> {
        let rev = self.revision();
        if let Some(Fault::MethodRefused { method: refused }) = self.fault() {
            if refused.eq_ignore_ascii_case(method) {
                return Err(ApiError::new(400, "ERROR_CORE", crate::fault::METHOD_REFUSED));
            }
        }
        let Some(spec) = methods::lookup(method) else {
            return Err(SystemError::MethodNotFound.to_error(rev));
        };
        if let Some(scopes) = spec.scope {
            if !scopes.iter().any(|s| ctx.caller.scope.iter().any(|have| have == s)) {
                return Err(match self.cfg.conflicts.missing_scope_error {
                    MissingScopeError::InsufficientScope => SystemError::InsufficientScope {
                        webhook: ctx.caller.is_webhook(),
                    }
                    .to_error(rev),
                    MissingScopeError::MethodNotFound => SystemError::MethodNotFound.to_error(rev),
                });
            }
        }
        if ctx.caller.is_webhook() {
            let permission = match spec.restriction {
                Restriction::None => Permission::Allow,
                Restriction::AppTelephony => self.cfg.conflicts.webhook_telephony,
                Restriction::AppEvents => self.cfg.conflicts.webhook_events,
            };
            if permission == Permission::Reject {
                return Err(SystemError::WrongAuthType.to_error(rev));
            }
        }
        let op_cfg = &self.cfg.limits.operating;
        if let Err(_blocked) = self
            .world()
            .operating
            .check(method, &ctx.caller.principal, ctx.now, op_cfg)
        {
            return Err(SystemError::OperationTimeLimit.to_error(rev));
        }
        let reply = methods::dispatch(ctx, spec.name, params).await?;
        let operating = self
            .world()
            .operating
            .charge(method, &ctx.caller.principal, ctx.now, op_cfg);
        Ok((reply, Some(operating)))
    }
}

/// `Telephony.ExternalCall.Register.json/` → `telephony.externalcall.register`.
pub(crate) fn normalize_method(raw: &str) -> String {
    let m = raw.trim().trim_matches('/');
    let m = m.strip_suffix(".json").or_else(|| m.strip_suffix(".xml")).unwrap_or(m);
    m.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::normalize_method;

    #[test]
    fn method_names_match_case_insensitively_with_optional_suffix() {
        assert_eq!(
            normalize_method("telephony.externalCall.register.json"),
            "telephony.externalcall.register"
        );
        assert_eq!(
            normalize_method("telephony.externalcall.register/"),
            "telephony.externalcall.register"
        );
        assert_eq!(normalize_method("user.get"), "user.get");
    }
}
