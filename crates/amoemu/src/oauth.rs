//! `POST /oauth2/access_token`: the authorization_code and refresh_token grants.
//!
//! Refresh tokens are single use: exchanging one kills it, and a second exchange is refused with the
//! documented body (`hint: "Token has been revoked"`). The reference does not give that answer's HTTP code; the
//! emulator uses the body's own `status` (401). Malformed requests (missing fields, unknown grant) get 400.

use serde_json::{json, Value};

use crate::server::{Answer, Core};
use crate::state::Expiring;

fn oauth_problem(status: u16, hint: &str) -> Answer {
    Answer::Problem(
        status,
        json!({
            "hint": hint,
            "title": "Некорректный запрос",
            "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
            "status": status,
            "detail": "В запросе отсутствует ряд параметров или параметры невалидны",
        }),
    )
}

pub(crate) fn token(core: &Core, body: &Value) -> Answer {
    let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or_default();
    let cfg = &core.cfg;
    for required in ["client_id", "client_secret", "grant_type", "redirect_uri"] {
        if field(required).is_empty() {
            return oauth_problem(400, &format!("Check the `{required}` parameter"));
        }
    }
    if field("client_id") != cfg.client_id || field("client_secret") != cfg.client_secret {
        return oauth_problem(401, "Client authentication failed");
    }
    if field("redirect_uri") != cfg.redirect_uri {
        return oauth_problem(400, "Redirect URI mismatch");
    }
    let now = core.now();
    let mut world = core.world();
    let tokens = &mut world.tokens;
    match field("grant_type") {
        "authorization_code" => match tokens.codes.remove(field("code")) {
            Some(code) if now < code.expires_at => {}
            Some(_) => return oauth_problem(401, "Authorization code has expired"),
            None => return oauth_problem(401, "Authorization code has been revoked"),
        },
        "refresh_token" => match tokens.refresh.remove(field("refresh_token")) {
            Some(t) if now < t.expires_at => {}
            Some(_) => return oauth_problem(401, "Token has expired"),
            None => return oauth_problem(401, "Token has been revoked"),
        },
        _ => {
            return oauth_problem(
                400,
                "The authorization grant type is not supported by the authorization server.",
            )
        }
    }
    let (access, refresh) = tokens.issue_pair(now, cfg);
    Answer::Json(
        200,
        json!({
            "token_type": "Bearer",
            "expires_in": cfg.access_token_lifetime_secs,
            "server_time": now,
            "access_token": access,
            "refresh_token": refresh,
        }),
    )
}

/// A one-time authorization code, as the consent redirect would carry it.
pub(crate) fn issue_code(core: &Core) -> String {
    let now = core.now();
    let mut world = core.world();
    let code = world.tokens.next("code");
    world.tokens.codes.insert(
        code.clone(),
        Expiring {
            expires_at: now + core.cfg.code_lifetime_secs,
        },
    );
    code
}
