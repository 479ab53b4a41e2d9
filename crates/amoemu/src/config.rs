//! What the emulated account starts with: integration credentials, token lifetimes, limits and seed data.

use serde::Deserialize;

/// Settings and seed data of one emulated account. Every field has a default ([`EmulatorConfig::default`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorConfig {
    pub account_id: u64,
    pub subdomain: String,
    /// The OAuth integration (public or private) ringlink is installed as.
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    /// Access token lifetime (the documented 24 h).
    pub access_token_lifetime_secs: i64,
    /// Refresh token lifetime: the documented 3 months (one comment says 30 days; set it to test that).
    pub refresh_token_lifetime_secs: i64,
    /// Authorization code lifetime (20 minutes, single use).
    pub code_lifetime_secs: i64,
    /// A long-lived token of a private integration, if any, and its expiry (Unix seconds).
    pub long_lived_token: Option<String>,
    pub long_lived_expires_at: i64,
    /// Requests per second per integration; the next one in the same second gets 429.
    pub rate_limit_per_sec: u32,
    /// Page size when the request gives no `limit`.
    pub default_page_limit: usize,
    /// Observed in the wild: `_links.next` present on the last page, leading to an empty page (204).
    pub next_on_last_page: bool,
    /// Whether the integration acts as an administrator (`GET /api/v4/users` is admin only: 403 otherwise).
    pub installed_by_admin: bool,
    /// Unix seconds the clock starts at; `None` = now.
    pub clock_start: Option<i64>,
    /// Whether the clock stands still until told to move.
    pub clock_frozen: bool,
    pub users: Vec<SeedUser>,
    pub pipelines: Vec<SeedPipeline>,
    pub contacts: Vec<SeedContact>,
    pub leads: Vec<SeedLead>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    pub id: u64,
    pub name: String,
    pub email: String,
    #[serde(default)]
    pub is_admin: bool,
    #[serde(default = "yes")]
    pub is_active: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPipeline {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub is_main: bool,
    #[serde(default = "yes")]
    pub is_unsorted_on: bool,
    /// The pipeline's own statuses; the system ones (its unsorted status, 142 won, 143 lost) are added.
    pub statuses: Vec<SeedStatus>,
    /// The id of this pipeline's unsorted status (type 1).
    pub unsorted_status_id: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedStatus {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedContact {
    pub id: u64,
    pub name: String,
    pub phones: Vec<String>,
    #[serde(default)]
    pub responsible_user_id: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedLead {
    pub id: u64,
    pub name: String,
    pub pipeline_id: u64,
    pub status_id: u64,
    #[serde(default)]
    pub contact_ids: Vec<u64>,
    #[serde(default)]
    pub responsible_user_id: u64,
}

fn yes() -> bool {
    true
}

impl EmulatorConfig {
    /// Reads the settings and seed data from a TOML file (the fields above; absent ones keep their defaults).
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, crate::EmuError> {
        let text = std::fs::read_to_string(path).map_err(|source| crate::EmuError::Io {
            context: format!("reading {}", path.display()),
            source,
        })?;
        toml::from_str(&text).map_err(|e| crate::EmuError::Config {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        let user = |id, name: &str, email: &str, is_admin| SeedUser {
            id,
            name: name.into(),
            email: email.into(),
            is_admin,
            is_active: true,
        };
        let status = |id, name: &str| SeedStatus { id, name: name.into() };
        EmulatorConfig {
            account_id: 29_000_001,
            subdomain: "ringlink".into(),
            client_id: "5f0c1b8e-2d4a-4c3e-9b7a-000000000001".into(),
            client_secret: "emulated-client-secret".into(),
            redirect_uri: "https://ringlink.example/amocrm/oauth".into(),
            access_token_lifetime_secs: 86_400,
            refresh_token_lifetime_secs: 90 * 86_400,
            code_lifetime_secs: 20 * 60,
            long_lived_token: None,
            long_lived_expires_at: i64::MAX,
            rate_limit_per_sec: 7,
            default_page_limit: 50,
            next_on_last_page: false,
            installed_by_admin: true,
            clock_start: None,
            clock_frozen: false,
            users: vec![
                user(8_000_001, "Администратор", "admin@ringlink.example", true),
                user(8_000_002, "Ольга Менеджер", "olga@ringlink.example", false),
                user(8_000_003, "Иван Продажи", "ivan@ringlink.example", false),
            ],
            pipelines: vec![
                SeedPipeline {
                    id: 7_000_001,
                    name: "Воронка".into(),
                    is_main: true,
                    is_unsorted_on: true,
                    unsorted_status_id: 7_100_001,
                    statuses: vec![status(7_100_002, "Первичный контакт"), status(7_100_003, "Переговоры")],
                },
                SeedPipeline {
                    id: 7_000_002,
                    name: "Опт".into(),
                    is_main: false,
                    is_unsorted_on: true,
                    unsorted_status_id: 7_200_001,
                    statuses: vec![status(7_200_002, "Новая заявка")],
                },
            ],
            contacts: vec![SeedContact {
                id: 9_000_001,
                name: "Пётр Клиентов".into(),
                phones: vec!["+7 (912) 345-67-89".into()],
                responsible_user_id: 8_000_002,
            }],
            leads: vec![SeedLead {
                id: 9_500_001,
                name: "Сделка Петра".into(),
                pipeline_id: 7_000_001,
                status_id: 7_100_002,
                contact_ids: vec![9_000_001],
                responsible_user_id: 8_000_002,
            }],
        }
    }
}
