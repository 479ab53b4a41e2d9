//! Active/standby: which instance of a tenant acts on its PBX's calls (the rules are `store::leadership`'s).
//!
//! Every instance starts as a standby and looks at the tenant's lease every `renew_secs`; it takes the lease when
//! it is free or expired and only then starts following the PBX (and puts back the steps the previous leader
//! had in flight). The leader renews every `renew_secs`. When it learns that another instance took over, or has
//! not managed to renew for a whole lease, it steps down by ending the process with an error: everything it was
//! doing stops at once, and its service manager starts it again, as a standby. Its writes are fenced in the store
//! anyway, so a leader that does not know yet that it was deposed writes nothing after the takeover. With SQLite
//! there is one instance: it leads from the start and never steps down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use store::leadership::{verdict, Verdict};
use store::{Leadership, Store};
use tracing::{info, warn};

use crate::config::StoreSettings;

/// This instance's part in the election.
#[derive(Clone)]
pub struct Lease {
    store: Arc<dyn Store>,
    /// A name unique to this process: host, process id and a random part.
    holder: String,
    lease: Duration,
    renew: Duration,
    telemetry: Arc<web::Telemetry>,
    base: web::StoreRole,
}

impl Lease {
    pub fn new(store: Arc<dyn Store>, settings: &StoreSettings, telemetry: Arc<web::Telemetry>) -> Lease {
        let (lease, renew) = settings.lease_timing();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        // Process ids repeat across restarts and containers: the start instant's nanoseconds tell them apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.subsec_nanos())
            .unwrap_or_default();
        let holder = format!("{host}:{}:{:04x}", std::process::id(), nanos & 0xffff);
        let base = web::StoreRole {
            backend: if settings.is_shared() { "postgresql" } else { "sqlite" }.into(),
            description: settings.describe(),
            tenant: settings.url.as_ref().and(settings.tenant.clone()),
            instance: settings.is_shared().then(|| holder.clone()),
            ..web::StoreRole::default()
        };
        Lease {
            store,
            holder,
            lease,
            renew,
            telemetry,
            base,
        }
    }

    /// One attempt to take or renew the lease, off the async threads.
    async fn attempt(&self) -> anyhow::Result<Leadership> {
        let store = self.store.clone();
        let holder = self.holder.clone();
        let lease = self.lease;
        let attempt = tokio::task::spawn_blocking(move || store.lead(&holder, lease));
        // A database that does not answer must not hold the leader's verdict up past its lease.
        match tokio::time::timeout(self.renew.max(Duration::from_secs(1)), attempt).await {
            Ok(answer) => Ok(answer??),
            Err(_) => anyhow::bail!(
                "the database did not answer within {:?}",
                self.renew.max(Duration::from_secs(1))
            ),
        }
    }

    fn report(&self, leadership: &Leadership) {
        let (role, leader, generation) = match leadership {
            Leadership::Sole => (web::Role::Leader, None, None),
            Leadership::Leader { generation, .. } => (web::Role::Leader, Some(self.holder.clone()), Some(*generation)),
            Leadership::Standby { holder, generation, .. } | Leadership::Deposed { holder, generation } => {
                (web::Role::Standby, Some(holder.clone()), Some(*generation))
            }
        };
        self.telemetry.set_store_role(web::StoreRole {
            role,
            leader,
            generation,
            ..self.base.clone()
        });
    }

    /// Waits as the standby until this instance leads (at once with SQLite or a free lease).
    pub async fn acquire(&self) -> anyhow::Result<Leadership> {
        self.telemetry.set_store_role(web::StoreRole {
            role: web::Role::Standby,
            ..self.base.clone()
        });
        let mut announced: Option<(String, i64)> = None;
        loop {
            match self.attempt().await {
                Ok(leadership) if leadership.leads() => {
                    self.report(&leadership);
                    if let Leadership::Leader {
                        generation, previous, ..
                    } = &leadership
                    {
                        let previous = if previous.is_empty() { "nobody" } else { previous };
                        info!(
                            instance = %self.holder,
                            generation,
                            previous,
                            lease_secs = self.lease.as_secs_f64(),
                            "took the lease: this instance leads its tenant"
                        );
                    }
                    return Ok(leadership);
                }
                Ok(leadership) => {
                    self.report(&leadership);
                    if let Leadership::Standby { holder, generation, .. } = &leadership {
                        if announced.as_ref() != Some(&(holder.clone(), *generation)) {
                            info!(
                                instance = %self.holder,
                                leader = %holder,
                                generation,
                                "standby: another instance leads this tenant; taking over when its lease expires"
                            );
                            announced = Some((holder.clone(), *generation));
                        }
                    }
                }
                Err(error) => warn!(error = %format!("{error:#}"), "standby: cannot read the lease; trying again"),
            }
            tokio::time::sleep(self.renew).await;
        }
    }

    /// Renews the lease every `renew_secs` while this instance leads; returns why it must step down. Never
    /// returns with SQLite.
    pub async fn keep(&self) -> String {
        if self.base.instance.is_none() {
            // The only instance of an embedded store.
            return std::future::pending().await;
        }
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.renew).await;
            let started = Instant::now();
            let attempt = self.attempt().await;
            match verdict(&attempt, renewed.elapsed(), self.lease) {
                Verdict::Lead => {
                    if let Ok(leadership) = &attempt {
                        renewed = started;
                        self.report(leadership);
                    } else if let Err(error) = &attempt {
                        warn!(error = %format!("{error:#}"), "cannot renew the lease; still leading while it runs");
                    }
                }
                Verdict::StepDown(reason) => {
                    if let Ok(leadership) = &attempt {
                        self.report(leadership);
                    }
                    return reason;
                }
            }
        }
    }

    /// Gives the lease up on a clean stop, so that the standby takes over at once.
    pub async fn resign(&self) {
        let store = self.store.clone();
        let holder = self.holder.clone();
        match tokio::task::spawn_blocking(move || store.resign(&holder)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(error = %error, "could not give the lease up; the standby waits for it to expire"),
            Err(error) => warn!(error = %error, "could not give the lease up"),
        }
    }
}
