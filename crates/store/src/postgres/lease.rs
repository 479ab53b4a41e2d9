//! The tenant's leader lease on PostgreSQL (the rules are [`crate::leadership`]'s): one row per tenant in
//! `leases`, taken and renewed under `FOR UPDATE`, and the fence every write transaction checks.
//!
//! A write takes `FOR KEY SHARE` on the row and compares the generation; a takeover first locks the row
//! `FOR UPDATE`, which waits for those writes to commit and makes the writes after it wait and then see the new
//! generation. So no write of a deposed leader commits after the takeover that deposed it.

use std::time::Duration;

use super::Tx;
use crate::error::{Result, StoreError};
use crate::leadership::{decide, Decision, Leadership, LeaseRow};
use crate::types::Timestamp;

/// What an instance that took part in the election checks before it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    /// The generation it took (what the row must still carry).
    pub generation: i64,
    /// It gave the lease up: it writes nothing more.
    pub resigned: bool,
}

/// Refuses the transaction unless the tenant's lease still carries the fence's generation.
pub async fn check(tx: &mut Tx<'_>, fence: &Fence) -> Result<()> {
    let tenant = tx.tenant;
    let current = tx
        .query_opt(
            "SELECT generation FROM leases WHERE tenant = $1 FOR KEY SHARE",
            &[&tenant],
        )
        .await?
        .map(|row| row.get::<_, i64>(0))
        .unwrap_or(0);
    if fence.resigned || current != fence.generation {
        return Err(StoreError::Fenced {
            generation: fence.generation,
            current,
        });
    }
    Ok(())
}

/// Takes, renews or reads the lease for `holder`, which led with `mine` (if it did). Returns where it stands
/// and the generation it now holds, if any.
pub async fn lead(
    tx: &mut Tx<'_>,
    holder: &str,
    mine: Option<i64>,
    lease: Duration,
) -> Result<(Leadership, Option<i64>)> {
    let tenant = tx.tenant;
    tx.execute(
        "INSERT INTO leases (tenant, holder, generation, expires_at, taken_at) VALUES ($1, '', 0, 0, 0)
         ON CONFLICT (tenant) DO NOTHING",
        &[&tenant],
    )
    .await?;
    // The database's clock, read after the lock: every instance measures the lease on the same clock.
    let row = tx
        .query_opt(
            "SELECT holder, generation, expires_at, (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT
             FROM leases WHERE tenant = $1 FOR UPDATE",
            &[&tenant],
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt {
            what: "lease",
            detail: "the tenant's lease row vanished while locked".into(),
        })?;
    let read = LeaseRow {
        holder: row.get(0),
        generation: row.get(1),
        expires_at: Timestamp::from_micros(row.get(2)),
    };
    let now = Timestamp::from_micros(row.get(3));
    let lease_micros = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
    let expires_at = now.as_micros().saturating_add(lease_micros);
    let remaining =
        |until: Timestamp| Duration::from_micros(until.as_micros().saturating_sub(now.as_micros()).max(0) as u64);
    Ok(match decide(&read, holder, mine, now) {
        Decision::Take { generation } => {
            tx.execute(
                "UPDATE leases SET holder = $2, generation = $3, expires_at = $4, taken_at = $5 WHERE tenant = $1",
                &[&tenant, &holder, &generation, &expires_at, &now.as_micros()],
            )
            .await?;
            let leadership = Leadership::Leader {
                generation,
                remaining: lease,
                took_over: true,
                previous: read.holder,
            };
            (leadership, Some(generation))
        }
        Decision::Renew => {
            tx.execute(
                "UPDATE leases SET expires_at = $2 WHERE tenant = $1",
                &[&tenant, &expires_at],
            )
            .await?;
            let leadership = Leadership::Leader {
                generation: read.generation,
                remaining: lease,
                took_over: false,
                previous: String::new(),
            };
            (leadership, Some(read.generation))
        }
        Decision::Wait => {
            let leadership = Leadership::Standby {
                remaining: remaining(read.expires_at),
                holder: read.holder,
                generation: read.generation,
            };
            (leadership, None)
        }
        Decision::Deposed => (
            Leadership::Deposed {
                holder: read.holder,
                generation: read.generation,
            },
            None,
        ),
    })
}

/// Ends `fence`'s lease now, if it still holds it.
pub async fn resign(tx: &mut Tx<'_>, fence: &Fence) -> Result<()> {
    let tenant = tx.tenant;
    tx.execute(
        "UPDATE leases SET expires_at = 0 WHERE tenant = $1 AND holder = $2 AND generation = $3",
        &[&tenant, &fence.holder, &fence.generation],
    )
    .await?;
    Ok(())
}
