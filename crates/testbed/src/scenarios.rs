//! Players for the call scenarios of the product specification (S1–S13, S19
//! and the S8 variants). Each plays the calls on the PBX, checks that the
//! phones and the caller saw what the scenario says, and returns once every
//! channel is gone. Ring and queue times are shortened to keep runs quick.

use std::time::Duration;

use crate::bed::{Route, TestBed, CLIENT};
use crate::error::{Error, Result};
use crate::sipp::Outcome;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const CALL_LIMIT: Duration = secs(90);
const STEP_LIMIT: Duration = secs(20);
const CLIENT_NUMBER_DIALLED: &str = "979001234567";

/// A playable scenario.
pub struct Scenario {
    pub id: &'static str,
    pub summary: &'static str,
}

/// Every scenario the PBX can play, in specification order.
pub const ALL: &[Scenario] = &[
    Scenario {
        id: "s1",
        summary: "incoming on the DID, 101 answers, talks 5 s, client hangs up",
    },
    Scenario {
        id: "s2",
        summary: "incoming, 101 rings until the dial timeout, nobody answers",
    },
    Scenario {
        id: "s3",
        summary: "incoming to the ringall queue 101/102/103, 102 answers",
    },
    Scenario {
        id: "s4",
        summary: "incoming to the one-by-one queue, 101 and 102 time out, 103 answers",
    },
    Scenario {
        id: "s5",
        summary: "incoming to the ringall queue, nobody answers, client abandons",
    },
    Scenario {
        id: "s6",
        summary: "incoming to the IVR, client hangs up before any phone rings",
    },
    Scenario {
        id: "s7",
        summary: "outgoing 101 to the client via the carrier, answered, talk 5 s",
    },
    Scenario {
        id: "s8-busy",
        summary: "outgoing 101 to the client, the client is busy (486)",
    },
    Scenario {
        id: "s8-decline",
        summary: "outgoing 101 to the client, the client declines (603)",
    },
    Scenario {
        id: "s8-noanswer",
        summary: "outgoing 101 to the client, no answer until the dial timeout",
    },
    Scenario {
        id: "s8-cancel",
        summary: "outgoing 101 to the client, 101 hangs up while it rings",
    },
    Scenario {
        id: "s9",
        summary: "local call 101 to 102, answered",
    },
    Scenario {
        id: "s10",
        summary: "incoming, 101 answers, blind transfer to 102, 102 answers",
    },
    Scenario {
        id: "s11",
        summary: "incoming, 101 answers, attended transfer: 101 consults 102, then completes",
    },
    Scenario {
        id: "s12",
        summary: "incoming, 101 rings, 102 picks it up with *8",
    },
    Scenario {
        id: "s13",
        summary: "incoming, 101 answers, parks the client, 103 retrieves",
    },
    Scenario {
        id: "s19-ringall",
        summary: "incoming to the FreePBX-style ringall queue (Local members), 102 answers",
    },
    Scenario {
        id: "s19-linear",
        summary: "incoming to the FreePBX-style one-by-one queue, 103 answers",
    },
    Scenario {
        id: "x1-local-route",
        summary: "outgoing 101 to the client through an outbound route Local/<number>@outbound-route/n",
    },
    Scenario {
        id: "x2-followme",
        summary: "incoming, follow-me rings 101 and the employee's mobile via the carrier; the mobile answers",
    },
    Scenario {
        id: "x3-originate-local",
        summary: "click-to-call: Originate Local/101@from-internal rings 101, then 102; 102 answers",
    },
    Scenario {
        id: "x3-originate-out",
        summary: "click-to-call: Originate Local/101@from-internal rings 101, then the client via the carrier",
    },
    Scenario {
        id: "x4-no-timestamps",
        summary: "S1 on a PBX with timestampevents = no (events carry no Timestamp)",
    },
];

/// Resets the bed and plays the scenario `id`.
pub async fn play(bed: &TestBed, id: &str) -> Result<()> {
    bed.reset().await?;
    play_prepared(bed, id).await
}

/// Plays scenario `id` on a bed already reset (the caller may start
/// recording AMI between the reset and the play).
pub async fn play_prepared(bed: &TestBed, id: &str) -> Result<()> {
    match id {
        "s1" => s1_incoming_answered(bed).await,
        "s2" => s2_incoming_no_answer(bed).await,
        "s3" => s3_queue_ringall(bed).await,
        "s4" => s4_queue_linear(bed).await,
        "s5" => s5_queue_abandoned(bed).await,
        "s6" => s6_ivr_abandoned(bed).await,
        "s7" => s7_outgoing_answered(bed).await,
        "s8-busy" => s8_outgoing_busy(bed).await,
        "s8-decline" => s8_outgoing_declined(bed).await,
        "s8-noanswer" => s8_outgoing_no_answer(bed).await,
        "s8-cancel" => s8_outgoing_cancelled(bed).await,
        "s9" => s9_local_call(bed).await,
        "s10" => s10_blind_transfer(bed).await,
        "s11" => s11_attended_transfer(bed).await,
        "s12" => s12_pickup(bed).await,
        "s13" => s13_park_and_retrieve(bed).await,
        "s19-ringall" => s19_freepbx_queue_ringall(bed).await,
        "s19-linear" => s19_freepbx_queue_linear(bed).await,
        "x1-local-route" => x1_outgoing_through_a_local_route(bed).await,
        "x2-followme" => x2_follow_me_answered_on_the_mobile(bed).await,
        "x3-originate-local" => x3_originate_to_a_colleague(bed).await,
        "x3-originate-out" => x3_originate_to_the_client(bed).await,
        "x4-no-timestamps" => x4_without_event_timestamps(bed).await,
        other => Err(Error::Scenario {
            id: other.to_owned(),
            message: format!(
                "unknown scenario; known: {}",
                ALL.iter().map(|s| s.id).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

fn expect(id: &str, who: &str, seen: &[Outcome], wanted: &[Outcome]) -> Result<()> {
    if seen == wanted {
        Ok(())
    } else {
        Err(Error::Scenario {
            id: id.to_owned(),
            message: format!("{who} saw {seen:?}, expected {wanted:?}"),
        })
    }
}

fn expect_rejected(id: &str, who: &str, seen: &[Outcome]) -> Result<u16> {
    match seen {
        [Outcome::Rejected(code)] => Ok(*code),
        _ => Err(Error::Scenario {
            id: id.to_owned(),
            message: format!("{who} saw {seen:?}, expected one final error response"),
        }),
    }
}

async fn done(bed: &TestBed) -> Result<()> {
    bed.wait_all_channels_gone(STEP_LIMIT).await
}

use Outcome::{Answered, Cancelled, HangupLocal, HangupRemote, Ringing};

/// S1: incoming on the DID → 101 rings → answers, talks 5 s, client hangs up.
pub async fn s1_incoming_answered(bed: &TestBed) -> Result<()> {
    bed.route_incoming(Route::Extension(101)).await?;
    bed.phone(101).answer_after(secs(2)).await?;
    let mut call = bed.incoming(CLIENT).talk(secs(5)).await?;
    let client = call.finished(CALL_LIMIT).await?;
    done(bed).await?;
    expect("s1", "client", &client, &[Answered, HangupLocal])?;
    expect(
        "s1",
        "101",
        &bed.phone_outcomes(101),
        &[Ringing, Answered, HangupRemote],
    )
}

/// S2: incoming → 101 rings (8 s dial timeout here), nobody answers.
pub async fn s2_incoming_no_answer(bed: &TestBed) -> Result<()> {
    bed.route_incoming(Route::Extension(101)).await?;
    bed.set_global("DIAL_TIMEOUT", "8").await?;
    bed.phone(101).no_answer().await?;
    let mut call = bed.incoming(CLIENT).await?;
    let client = call.finished(CALL_LIMIT).await?;
    done(bed).await?;
    expect_rejected("s2", "client", &client)?;
    expect("s2", "101", &bed.phone_outcomes(101), &[Ringing, Cancelled])
}

/// S3: incoming → ringall queue 101, 102, 103 → 102 answers.
pub async fn s3_queue_ringall(bed: &TestBed) -> Result<()> {
    queue_ringall_answered_by_102(bed, "s3", Route::QueueRingAll).await
}

/// A ringall queue (101, 102, 103 at once) where 102 answers after 3 s and talks 5 s.
async fn queue_ringall_answered_by_102(bed: &TestBed, id: &str, route: Route) -> Result<()> {
    bed.route_incoming(route).await?;
    bed.phone(101).no_answer().await?;
    bed.phone(102).answer_after(secs(3)).await?;
    bed.phone(103).no_answer().await?;
    let mut call = bed.incoming(CLIENT).talk(secs(5)).await?;
    let client = call.finished(CALL_LIMIT).await?;
    done(bed).await?;
    expect(id, "client", &client, &[Answered, HangupLocal])?;
    expect(id, "101", &bed.phone_outcomes(101), &[Ringing, Cancelled])?;
    expect(id, "102", &bed.phone_outcomes(102), &[Ringing, Answered, HangupRemote])?;
    expect(id, "103", &bed.phone_outcomes(103), &[Ringing, Cancelled])
}

/// S4: incoming → one-by-one queue 101 → 102 → 103 (4 s each), 103 answers.
pub async fn s4_queue_linear(bed: &TestBed) -> Result<()> {
    queue_linear_answered_by_103(bed, "s4", Route::QueueLinear).await
}

/// A one-by-one queue where 101 and 102 ring out and 103 answers after 2 s and talks 5 s.
async fn queue_linear_answered_by_103(bed: &TestBed, id: &str, route: Route) -> Result<()> {
    bed.route_incoming(route).await?;
    bed.phone(101).no_answer().await?;
    bed.phone(102).no_answer().await?;
    bed.phone(103).answer_after(secs(2)).await?;
    let mut call = bed.incoming(CLIENT).talk(secs(5)).await?;
    let client = call.finished(CALL_LIMIT).await?;
    done(bed).await?;
    expect(id, "client", &client, &[Answered, HangupLocal])?;
    expect(id, "101", &bed.phone_outcomes(101), &[Ringing, Cancelled])?;
    expect(id, "102", &bed.phone_outcomes(102), &[Ringing, Cancelled])?;
    expect(id, "103", &bed.phone_outcomes(103), &[Ringing, Answered, HangupRemote])
}

/// S5: incoming → ringall queue, nobody answers, the client gives up after 9 s.
pub async fn s5_queue_abandoned(bed: &TestBed) -> Result<()> {
    bed.route_incoming(Route::QueueRingAll).await?;
    for ext in [101, 102, 103] {
        bed.phone(ext).no_answer().await?;
    }
    let mut call = bed.incoming(CLIENT).cancel_after(secs(9)).await?;
    let client = call.finished(CALL_LIMIT).await?;
    done(bed).await?;
    expect("s5", "client", &client, &[Cancelled])?;
    for ext in [101, 102, 103] {
        let seen = bed.phone_outcomes(ext);
        // Rung in the first round (6 s) and again after the 1 s retry.
        if seen.is_empty() || seen.chunks(2).any(|pair| pair != [Ringing, Cancelled]) {
            return Err(Error::Scenario {
                id: "s5".into(),
                message: format!("{ext} saw {seen:?}, expected ringing/cancelled rounds"),
            });
        }
    }
    Ok(())
}

/// S6: incoming → IVR answers, the client hangs up after 3 s, before any phone rings.
pub async fn s6_ivr_abandoned(bed: &TestBed) -> Result<()> {
    bed.route_incoming(Route::Ivr).await?;
    bed.phone(101).answer_after(secs(1)).await?;
    let mut call = bed.incoming(CLIENT).talk(secs(3)).await?;
    let client = call.finished(CALL_LIMIT).await?;
    done(bed).await?;
    expect("s6", "client", &client, &[Answered, HangupLocal])?;
    expect("s6", "101", &bed.phone_outcomes(101), &[])
}

/// S7: outgoing 101 → client via the carrier, answered, talk 5 s, 101 hangs up.
pub async fn s7_outgoing_answered(bed: &TestBed) -> Result<()> {
    bed.phone(101).answer_after(secs(1)).await?;
    bed.carrier().answer_after(secs(2)).await?;
    let mut call = bed.dial(101, CLIENT_NUMBER_DIALLED).talk(secs(5)).await?;
    let caller = call.finished(CALL_LIMIT).await?;
    done(bed).await?;
    expect("s7", "101", &caller, &[Answered, HangupLocal])?;
    expect(
        "s7",
        "client",
        &bed.carrier_outcomes(),
        &[Ringing, Answered, HangupRemote],
    )
}

async fn s8_outgoing_failed(bed: &TestBed, id: &str, expected_at_client: &[Outcome]) -> Result<u16> {
    bed.phone(101).answer_after(secs(1)).await?;
    let mut call = bed.dial(101, CLIENT_NUMBER_DIALLED).await?;
    let caller = call.finished(CALL_LIMIT).await?;
    done(bed).await?;
    let code = expect_rejected(id, "101", &caller)?;
    expect(id, "client", &bed.carrier_outcomes(), expected_at_client)?;
    Ok(code)
}

/// S8: the client is busy (486).
pub async fn s8_outgoing_busy(bed: &TestBed) -> Result<()> {
    bed.carrier().busy().ring_for(secs(2)).await?;
    s8_outgoing_failed(bed, "s8-busy", &[Ringing, Outcome::Rejected(486)]).await?;
    Ok(())
}

/// S8: the client declines (603).
pub async fn s8_outgoing_declined(bed: &TestBed) -> Result<()> {
    bed.carrier().decline().ring_for(secs(2)).await?;
    s8_outgoing_failed(bed, "s8-decline", &[Ringing, Outcome::Rejected(603)]).await?;
    Ok(())
}

/// S8: nobody answers; the PBX gives up after its 8 s outbound dial timeout.
pub async fn s8_outgoing_no_answer(bed: &TestBed) -> Result<()> {
    bed.set_global("OUTBOUND_TIMEOUT", "8").await?;
    bed.carrier().no_answer().await?;
    s8_outgoing_failed(bed, "s8-noanswer", &[Ringing, Cancelled]).await?;
    Ok(())
}

/// S8: 101 hangs up while the client's phone rings.
pub async fn s8_outgoing_cancelled(bed: &TestBed) -> Result<()> {
    bed.phone(101).answer_after(secs(1)).await?;
    bed.carrier().no_answer().await?;
    let mut call = bed.dial(101, CLIENT_NUMBER_DIALLED).cancel_after(secs(4)).await?;
    let caller = call.finished(CALL_LIMIT).await?;
    done(bed).await?;
    expect("s8-cancel", "101", &caller, &[Cancelled])?;
    expect("s8-cancel", "client", &bed.carrier_outcomes(), &[Ringing, Cancelled])
}

/// S9: local call 101 → 102, answered, 101 hangs up after 4 s.
pub async fn s9_local_call(bed: &TestBed) -> Result<()> {
    bed.phone(101).answer_after(secs(1)).await?;
    bed.phone(102).answer_after(secs(2)).await?;
    let mut call = bed.dial(101, "102").talk(secs(4)).await?;
    let caller = call.finished(CALL_LIMIT).await?;
    done(bed).await?;
    expect("s9", "101", &caller, &[Answered, HangupLocal])?;
    expect(
        "s9",
        "102",
        &bed.phone_outcomes(102),
        &[Ringing, Answered, HangupRemote],
    )
}

/// S10: incoming → 101 answers → blind transfer to 102 → 102 answers.
pub async fn s10_blind_transfer(bed: &TestBed) -> Result<()> {
    bed.route_incoming(Route::Extension(101)).await?;
    bed.phone(101).answer_after(secs(2)).await?;
    bed.phone(102).answer_after(secs(2)).await?;
    let mut call = bed.incoming(CLIENT).talk(secs(12)).await?;
    let phone101 = bed.wait_phone_talking(101, STEP_LIMIT).await?;
    tokio::time::sleep(secs(3)).await;
    bed.blind_transfer(&phone101.name, "102").await?;
    bed.wait_phone_talking(102, STEP_LIMIT).await?;
    let client = call.finished(CALL_LIMIT).await?;
    done(bed).await?;
    expect("s10", "client", &client, &[Answered, HangupLocal])?;
    expect(
        "s10",
        "101",
        &bed.phone_outcomes(101),
        &[Ringing, Answered, HangupRemote],
    )?;
    expect(
        "s10",
        "102",
        &bed.phone_outcomes(102),
        &[Ringing, Answered, HangupRemote],
    )
}

/// S11: incoming → 101 answers → consults 102 (attended transfer) → 101 hangs
/// up, which completes the transfer → the client talks with 102.
pub async fn s11_attended_transfer(bed: &TestBed) -> Result<()> {
    bed.route_incoming(Route::Extension(101)).await?;
    bed.phone(101).answer_after(secs(2)).await?;
    bed.phone(102).answer_after(secs(2)).await?;
    let mut call = bed.incoming(CLIENT).talk(secs(16)).await?;
    let phone101 = bed.wait_phone_talking(101, STEP_LIMIT).await?;
    tokio::time::sleep(secs(2)).await;
    bed.attended_transfer(&phone101.name, "102").await?;
    bed.wait_phone_talking(102, STEP_LIMIT).await?;
    tokio::time::sleep(secs(2)).await;
    bed.hangup(&phone101.name).await?;
    // After completion the client and 102 share a bridge.
    wait_bridged_together(bed, "s11", "carrier", "102").await?;
    let client = call.finished(CALL_LIMIT).await?;
    done(bed).await?;
    expect("s11", "client", &client, &[Answered, HangupLocal])?;
    expect(
        "s11",
        "101",
        &bed.phone_outcomes(101),
        &[Ringing, Answered, HangupRemote],
    )?;
    expect(
        "s11",
        "102",
        &bed.phone_outcomes(102),
        &[Ringing, Answered, HangupRemote],
    )
}

/// S12: incoming → 101 rings → 102 dials *8 and takes the call, talks 5 s.
pub async fn s12_pickup(bed: &TestBed) -> Result<()> {
    bed.route_incoming(Route::Extension(101)).await?;
    bed.phone(101).no_answer().await?;
    bed.phone(102).answer_after(secs(1)).await?;
    let mut call = bed.incoming(CLIENT).await?;
    bed.wait_phone_ringing(101, STEP_LIMIT).await?;
    tokio::time::sleep(secs(2)).await;
    let mut pickup = bed.dial(102, "*8").talk(secs(5)).await?;
    let picker = pickup.finished(CALL_LIMIT).await?;
    let client = call.finished(CALL_LIMIT).await?;
    done(bed).await?;
    expect("s12", "102", &picker, &[Answered, HangupLocal])?;
    expect("s12", "client", &client, &[Answered, HangupRemote])?;
    expect("s12", "101", &bed.phone_outcomes(101), &[Ringing, Cancelled])
}

/// S13: incoming → 101 answers → parks the client → 103 retrieves, talks 4 s.
pub async fn s13_park_and_retrieve(bed: &TestBed) -> Result<()> {
    bed.route_incoming(Route::Extension(101)).await?;
    bed.phone(101).answer_after(secs(2)).await?;
    bed.phone(103).answer_after(secs(1)).await?;
    let mut call = bed.incoming(CLIENT).await?;
    let phone101 = bed.wait_phone_talking(101, STEP_LIMIT).await?;
    let client_leg = bed.wait_client_talking(STEP_LIMIT).await?;
    tokio::time::sleep(secs(3)).await;
    bed.park(&client_leg.name, &phone101.name).await?;
    let space = wait_parked(bed).await?;
    tokio::time::sleep(secs(2)).await;
    let mut retrieve = bed.dial(103, &space).talk(secs(4)).await?;
    let retriever = retrieve.finished(CALL_LIMIT).await?;
    let client = call.finished(CALL_LIMIT).await?;
    done(bed).await?;
    expect("s13", "103", &retriever, &[Answered, HangupLocal])?;
    expect("s13", "client", &client, &[Answered, HangupRemote])?;
    expect(
        "s13",
        "101",
        &bed.phone_outcomes(101),
        &[Ringing, Answered, HangupRemote],
    )
}

/// Waits until channels of the two endpoints talk to each other: in one
/// bridge, or in bridges joined by a `Local/...;1` / `;2` pair.
async fn wait_bridged_together(bed: &TestBed, id: &str, a: &str, b: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + STEP_LIMIT;
    loop {
        let channels = bed.channels().await?;
        let bridge_of = |endpoint: &str| {
            channels
                .iter()
                .find(|c| c.is_endpoint(endpoint) && c.is_bridged())
                .map(|c| c.bridge_id.clone())
        };
        if let (Some(x), Some(y)) = (bridge_of(a), bridge_of(b)) {
            if connected_bridges(&channels, &x).contains(&y) {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Scenario {
                id: id.to_owned(),
                message: format!("{a} and {b} never talked to each other; channels: {channels:?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bridges reachable from `start` through Local channel pairs.
fn connected_bridges(channels: &[crate::bed::ChannelInfo], start: &str) -> Vec<String> {
    let mut reached = vec![start.to_owned()];
    let mut i = 0;
    while i < reached.len() {
        let bridge = reached[i].clone();
        for c in channels
            .iter()
            .filter(|c| c.bridge_id == bridge && c.name.starts_with("Local/"))
        {
            let pair = c.name.trim_end_matches(";1").trim_end_matches(";2");
            for other in channels
                .iter()
                .filter(|o| o.name.starts_with(pair) && o.name != c.name && o.is_bridged())
            {
                if !reached.contains(&other.bridge_id) {
                    reached.push(other.bridge_id.clone());
                }
            }
        }
        i += 1;
    }
    reached
}

async fn wait_parked(bed: &TestBed) -> Result<String> {
    let deadline = tokio::time::Instant::now() + STEP_LIMIT;
    loop {
        if let Some((space, _)) = bed.parked_calls().await?.into_iter().next() {
            return Ok(space);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: "a parked call".into(),
                after: STEP_LIMIT,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// S19: FreePBX-style ringall queue (members `Local/<ext>@from-queue/n`), 102 answers.
pub async fn s19_freepbx_queue_ringall(bed: &TestBed) -> Result<()> {
    queue_ringall_answered_by_102(bed, "s19-ringall", Route::FreePbxQueueRingAll).await
}

/// S19: FreePBX-style one-by-one queue, 101 and 102 time out, 103 answers.
pub async fn s19_freepbx_queue_linear(bed: &TestBed) -> Result<()> {
    queue_linear_answered_by_103(bed, "s19-linear", Route::FreePbxQueueLinear).await
}

/// X1: 101 dials `77` + the client's number; the dialplan goes out through `Local/<number>@outbound-route/n`,
/// whose `;2` dials the carrier. (The recording on the route's side keeps Asterisk from optimising the pair
/// away, as on most PBXs that record outgoing calls.)
pub async fn x1_outgoing_through_a_local_route(bed: &TestBed) -> Result<()> {
    let id = "x1-local-route";
    bed.phone(101).answer_after(secs(1)).await?;
    bed.carrier().answer_after(secs(2)).await?;
    let number = format!("77{}", &CLIENT_NUMBER_DIALLED[1..]);
    let mut call = bed.dial(101, &number).talk(secs(5)).await?;
    let caller = call.finished(CALL_LIMIT).await?;
    done(bed).await?;
    expect(id, "101", &caller, &[Answered, HangupLocal])?;
    expect(
        id,
        "client",
        &bed.carrier_outcomes(),
        &[Ringing, Answered, HangupRemote],
    )
}

/// X2: follow-me: the DID rings 101 and, through the carrier, the mobile; the mobile answers after 3 s, talks,
/// the client hangs up.
pub async fn x2_follow_me_answered_on_the_mobile(bed: &TestBed) -> Result<()> {
    bed.route_incoming(Route::FollowMe(101)).await?;
    bed.phone(101).no_answer().await?;
    bed.carrier().answer_after(secs(3)).await?;
    let mut call = bed.incoming(CLIENT).talk(secs(5)).await?;
    let client = call.finished(CALL_LIMIT).await?;
    done(bed).await?;
    expect("x2-followme", "client", &client, &[Answered, HangupLocal])?;
    expect("x2-followme", "101", &bed.phone_outcomes(101), &[Ringing, Cancelled])?;
    expect(
        "x2-followme",
        "mobile",
        &bed.carrier_outcomes(),
        &[Ringing, Answered, HangupRemote],
    )
}

/// X3: click-to-call from 101 to 102: 101's phone rings first (1 s), then 102 (2 s), 102 hangs up after 4 s.
pub async fn x3_originate_to_a_colleague(bed: &TestBed) -> Result<()> {
    bed.phone(101).answer_after(secs(1)).await?;
    bed.phone(102).answer_after(secs(2)).talk(secs(4)).await?;
    bed.originate_via_local(101, "102").await?;
    wait_bridged_together(bed, "x3-originate-local", "101", "102").await?;
    bed.wait_all_channels_gone(CALL_LIMIT).await?;
    expect(
        "x3-originate-local",
        "101",
        &bed.phone_outcomes(101),
        &[Ringing, Answered, HangupRemote],
    )?;
    expect(
        "x3-originate-local",
        "102",
        &bed.phone_outcomes(102),
        &[Ringing, Answered, HangupLocal],
    )
}

/// X3: click-to-call from 101 to the client: 101 rings first, then the carrier; the client hangs up after 4 s.
pub async fn x3_originate_to_the_client(bed: &TestBed) -> Result<()> {
    bed.phone(101).answer_after(secs(1)).await?;
    bed.carrier().answer_after(secs(2)).talk(secs(4)).await?;
    bed.originate_via_local(101, CLIENT_NUMBER_DIALLED).await?;
    bed.wait_phone_talking(101, STEP_LIMIT).await?;
    tokio::time::sleep(secs(1)).await;
    bed.wait_all_channels_gone(CALL_LIMIT).await?;
    expect(
        "x3-originate-out",
        "101",
        &bed.phone_outcomes(101),
        &[Ringing, Answered, HangupRemote],
    )?;
    expect(
        "x3-originate-out",
        "client",
        &bed.carrier_outcomes(),
        &[Ringing, Answered, HangupLocal],
    )
}

/// X4: S1 on a PBX whose manager.conf has `timestampevents = no`.
pub async fn x4_without_event_timestamps(bed: &TestBed) -> Result<()> {
    bed.set_timestamp_events(false).await?;
    let played = s1_incoming_answered(bed).await;
    bed.set_timestamp_events(true).await?;
    played
}
