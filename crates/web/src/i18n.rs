//! Russian and English: chosen by the language cookie (the header's switch), else by `Accept-Language`.

use axum::http::{header, HeaderMap};

use crate::auth::{cookie, LANG_COOKIE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Ru,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ru => "ru",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "en" => Some(Lang::En),
            "ru" => Some(Lang::Ru),
            _ => None,
        }
    }

    /// The cookie's choice, else the first of `ru`/`en` in `Accept-Language` (by q), else English.
    pub fn of(headers: &HeaderMap) -> Self {
        if let Some(lang) = cookie(headers, LANG_COOKIE).and_then(Lang::parse) {
            return lang;
        }
        let accept = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut best: Option<(f32, Lang)> = None;
        for part in accept.split(',') {
            let mut pieces = part.trim().split(';');
            let tag = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = pieces
                .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()))
                .unwrap_or(1.0);
            let lang = match tag.split('-').next() {
                Some("ru") => Lang::Ru,
                Some("en") => Lang::En,
                _ => continue,
            };
            if best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map(|(_, lang)| lang).unwrap_or(Lang::En)
    }

    /// The text for `key` in this language (the key itself if missing, so a gap shows instead of hiding).
    pub fn t(self, key: &'static str) -> &'static str {
        TEXTS
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, en, ru)| match self {
                Lang::En => *en,
                Lang::Ru => *ru,
            })
            .unwrap_or(key)
    }
}

/// key, English, Russian.
const TEXTS: &[(&str, &str, &str)] = &[
    ("status", "Status", "Состояние"),
    ("calls", "Calls", "Звонки"),
    ("logout", "Log out", "Выйти"),
    ("login", "Log in", "Войти"),
    ("password", "Password", "Пароль"),
    ("password_again", "Password again", "Пароль ещё раз"),
    ("wrong_password", "Wrong password.", "Неверный пароль."),
    (
        "too_many",
        "Too many attempts; wait a minute.",
        "Слишком много попыток; подождите минуту.",
    ),
    ("setup", "First run", "Первый запуск"),
    (
        "setup_intro",
        "Choose the administrator's password. The setup code is in ringlink's log.",
        "Задайте пароль администратора. Код настройки — в журнале ringlink.",
    ),
    ("setup_code", "Setup code", "Код настройки"),
    (
        "setup_bad_code",
        "Wrong setup code (see ringlink's log).",
        "Неверный код настройки (см. журнал ringlink).",
    ),
    ("setup_mismatch", "The passwords differ.", "Пароли не совпадают."),
    (
        "setup_short",
        "The password needs at least 10 characters.",
        "Пароль должен быть не короче 10 символов.",
    ),
    ("save", "Save", "Сохранить"),
    ("app_status", "Application", "Приложение"),
    ("reasons", "Reasons", "Причины"),
    ("version", "Version", "Версия"),
    ("uptime", "Uptime", "Работает"),
    ("ami", "Asterisk (AMI)", "Asterisk (AMI)"),
    ("store_card", "Store", "Хранилище"),
    ("tenant", "tenant", "арендатор"),
    ("role_leader", "leader: this instance follows the PBX", "ведущий: этот экземпляр следит за АТС"),
    ("role_standby", "standby: waits to take over from", "резерв: ждёт, чтобы сменить"),
    ("instance", "instance", "экземпляр"),
    ("generation", "lease generation", "поколение аренды"),
    ("connected", "connected", "подключено"),
    ("disconnected", "not connected", "нет подключения"),
    ("since", "since", "с"),
    ("reconnects", "Reconnects", "Переподключений"),
    ("events_dropped", "Events dropped", "Потеряно событий"),
    ("crm", "Bitrix24", "Битрикс24"),
    ("reachable", "reachable", "доступен"),
    ("unreachable", "not reachable", "недоступен"),
    ("not_configured", "not configured", "не настроен"),
    ("no_requests", "no requests yet", "запросов ещё не было"),
    ("budget", "Request budget", "Запас запросов"),
    ("last_error", "Last error", "Последняя ошибка"),
    ("outbox", "Outbox", "Очередь"),
    ("pending", "pending", "ждут"),
    ("in_flight", "in flight", "отправляются"),
    ("failed", "failed", "не удались"),
    ("runs", "runs", "запусков"),
    ("applied", "applied", "применены"),
    ("cancelled", "cancelled", "отменили запрос"),
    ("done", "done", "выполнены"),
    ("dropped", "dropped", "отброшены"),
    ("oldest", "Oldest unsent", "Самый старый неотправленный"),
    ("users_cache", "Users cache", "Кэш пользователей"),
    ("users", "users", "пользователей"),
    ("extensions", "extensions", "внутренних номеров"),
    ("updated", "updated", "обновлён"),
    ("never", "never", "никогда"),
    ("hooks", "Hooks", "Хуки"),
    ("off", "off", "выключены"),
    ("calls_title", "Calls journal", "Журнал звонков"),
    ("number", "Number", "Номер"),
    ("employee", "Employee", "Сотрудник"),
    ("from", "From", "С"),
    ("to", "To", "По"),
    ("result", "Result", "Результат"),
    ("any", "any", "любой"),
    ("answered", "answered", "отвечен"),
    ("missed", "missed", "пропущен"),
    ("live", "in progress", "идёт"),
    ("has_errors", "has errors", "с ошибками"),
    ("filter", "Filter", "Показать"),
    ("call", "Call", "Звонок"),
    ("started", "Started", "Начало"),
    ("last_activity", "Last activity", "Последнее событие"),
    ("entries", "Entries", "Записей"),
    ("errors", "Errors", "Ошибок"),
    ("steps_open", "Open steps", "Шагов в очереди"),
    ("steps_failed", "Failed steps", "Неудачных шагов"),
    ("no_calls", "No calls match.", "Нет подходящих звонков."),
    (
        "search_busy",
        "Another journal search is running. Try again in a few seconds.",
        "Сейчас выполняется другой поиск по журналу. Повторите через несколько секунд.",
    ),
    (
        "search_stopped",
        "The search took longer than its time limit and was stopped. Narrow it: a longer text (3 characters or \
         more), a date range or another filter",
        "Поиск занял больше отведённого времени и был остановлен. Сузьте его: текст подлиннее (от 3 символов), \
         период или другой фильтр",
    ),
    ("older", "Older calls", "Более ранние звонки"),
    ("timeline", "Timeline", "Хронология"),
    ("time", "Time", "Время"),
    ("kind", "Kind", "Тип"),
    ("what", "What", "Что"),
    ("details", "details", "подробности"),
    ("steps", "CRM steps", "Шаги в CRM"),
    ("state", "State", "Состояние"),
    ("attempts", "Attempts", "Попыток"),
    (
        "retry",
        "Send failed and dropped steps again",
        "Отправить неудавшиеся и отброшенные шаги снова",
    ),
    (
        "retried",
        "steps set to be sent again",
        "шагов поставлено на повторную отправку",
    ),
    ("reprocess", "Re-process this call", "Обработать звонок заново"),
    (
        "reprocess_hint",
        "Fills what Bitrix24 lacks of this call: plans it again (from the PBX's CEL when configured, else from \
         the journal) and sends failed steps again. Steps Bitrix24 already took are never sent twice.",
        "Дополняет то, чего нет в Битрикс24 по этому звонку: планирует его заново (по CEL АТС, если он \
         настроен, иначе по журналу) и снова отправляет неудавшиеся шаги. Принятые Битрикс24 шаги не \
         отправляются повторно.",
    ),
    ("rp_failed", "The call could not be re-processed", "Не удалось обработать звонок заново"),
    (
        "rp_live",
        "The call is still going on: ringlink follows it and registers it when it ends. Nothing was changed.",
        "Звонок ещё идёт: ringlink следит за ним и зарегистрирует его по окончании. Ничего не изменено.",
    ),
    (
        "rp_complete",
        "Nothing to re-process: every step of this call is done, Bitrix24 has it whole. Nothing was sent again.",
        "Обрабатывать нечего: все шаги звонка выполнены, в Битрикс24 он есть целиком. Ничего не отправлено \
         повторно.",
    ),
    ("rp_from_cel", "Planned again from the PBX's CEL.", "Спланирован заново по CEL АТС."),
    (
        "rp_from_journal",
        "Planned again from the journal.",
        "Спланирован заново по журналу.",
    ),
    ("rp_added", "Steps added", "Добавлены шаги"),
    (
        "rp_nothing_added",
        "Nothing was missing: no step was added or sent again.",
        "Ничего не упущено: шаги не добавлены и не отправлены повторно.",
    ),
    ("rp_waiting", "steps wait to be sent", "шагов ждут отправки"),
    (
        "unknown_call",
        "No such call in the journal.",
        "Такого звонка нет в журнале.",
    ),
    ("kind_ami", "PBX", "АТС"),
    ("kind_decision", "decision", "решение"),
    ("kind_hook", "hook", "хук"),
    ("kind_crm_request", "to Bitrix24", "в Битрикс24"),
    ("kind_crm_response", "from Bitrix24", "из Битрикс24"),
    ("kind_error", "error", "ошибка"),
    (
        "forbidden",
        "Forbidden: the form is stale or was not sent from this UI. Reload the page and try again.",
        "Запрещено: форма устарела или отправлена не из этого интерфейса. Обновите страницу и повторите.",
    ),
    ("not_found", "Not found.", "Не найдено."),
    ("logs", "Logs", "Журнал работы"),
    ("level", "Level", "Уровень"),
    (
        "logs_intro",
        "The newest lines first, from memory (secrets masked); the full log is where ringlink writes it.",
        "Сначала новые строки, из памяти (секреты скрыты); полный журнал — там, куда его пишет ringlink.",
    ),
    ("logs_none", "No lines at this level yet.", "Строк этого уровня пока нет."),
    ("logs_off", "ringlink keeps no log lines for the UI.", "ringlink не хранит строки журнала для интерфейса."),
    ("users_title", "Users", "Пользователи"),
    ("gap_title", "Calls that may be missing", "Звонки, которых может не быть в CRM"),
    (
        "gap_acknowledge",
        "Acknowledge (stop warning about this period)",
        "Принять к сведению (больше не предупреждать об этом периоде)",
    ),
    ("gap_acknowledged", "Acknowledged at", "Принято к сведению"),
    ("users_refresh", "Refresh from Bitrix24 now", "Обновить из Битрикс24 сейчас"),
    (
        "users_refreshing",
        "Refresh asked for; reload the page in a few seconds.",
        "Обновление запрошено; обновите страницу через несколько секунд.",
    ),
    ("users_none", "The users directory is empty.", "Справочник пользователей пуст."),
    ("extension", "Extension", "Внутренний номер"),
    ("name", "Name", "Имя"),
    ("phones", "Other phones", "Другие телефоны"),
    ("active", "Active", "Активен"),
    ("yes", "yes", "да"),
    ("no", "no", "нет"),
    ("settings", "Settings", "Настройки"),
    ("set_business", "Business logic", "Бизнес-логика"),
    ("set_lists", "Black and white lists", "Чёрный и белый списки"),
    ("set_missed", "Missed calls: responsible and task", "Пропущенные: ответственный и задача"),
    ("set_trunks", "Trunks (lines)", "Транки (линии)"),
    ("set_recordings", "Recordings", "Записи разговоров"),
    ("set_hooks", "Customization hooks", "Хуки"),
    ("set_connections", "Connections and log", "Подключения и журнал"),
    ("set_restart", "after restart", "после перезапуска"),
    (
        "set_restart_hint",
        "Saved to the file now; ringlink uses it after a restart.",
        "Сохраняется в файл сразу; ringlink применит после перезапуска.",
    ),
    (
        "set_intro",
        "Values are saved in the configuration file (comments kept). Keys without a mark apply from the next call; keys marked \"after restart\" need ringlink restarted. Environment variables RINGLINK__… still override the file.",
        "Значения сохраняются в файле настроек (комментарии сохраняются). Ключи без пометки применяются со следующего звонка; с пометкой «после перезапуска» — после перезапуска ringlink. Переменные окружения RINGLINK__… по-прежнему важнее файла.",
    ),
    (
        "set_trunks_badge",
        "call tracking after restart",
        "учёт звонков — после перезапуска",
    ),
    (
        "set_trunks_note",
        "Call tracking uses the new trunks after a restart of ringlink; the Bitrix24 external lines are synced at once (added or renamed when saved).",
        "Учёт звонков использует новые транки после перезапуска ringlink; внешние линии Битрикс24 синхронизируются сразу (добавляются или переименовываются при сохранении).",
    ),
    ("set_applied", "Saved and applied", "Сохранено и применено"),
    (
        "set_after_restart",
        "Saved; take effect after a restart",
        "Сохранено; вступит в силу после перезапуска",
    ),
    ("set_nothing", "Nothing changed.", "Ничего не изменилось."),
    ("set_secret_kept", "set — leave empty to keep", "задан — оставьте пустым, чтобы не менять"),
    ("set_secret_unset", "not set", "не задан"),
    ("set_list_hint", "comma-separated", "через запятую"),
    (
        "set_no_file",
        "ringlink was started without a configuration file the UI may edit.",
        "ringlink запущен без файла настроек, который можно менять из интерфейса.",
    ),
    ("wizard", "Setup", "Настройка"),
    ("wiz_ami", "PBX (AMI)", "АТС (AMI)"),
    ("wiz_crm", "Bitrix24", "Битрикс24"),
    ("wiz_trunks", "Trunks", "Линии"),
    ("wiz_call", "Test call", "Тестовый звонок"),
    (
        "wiz_ami_intro",
        "The Asterisk Manager Interface user ringlink logs in as (manager.conf). Test shows the version and the PJSIP endpoints found; endpoints named other than by digits are listed as trunks.",
        "Пользователь Asterisk Manager Interface, под которым входит ringlink (manager.conf). Проверка покажет версию и найденные PJSIP-абоненты; абоненты, названные не цифрами, показаны как линии.",
    ),
    ("wiz_ami_address", "Address (host:port)", "Адрес (хост:порт)"),
    ("wiz_ami_user", "User", "Пользователь"),
    ("wiz_ami_secret", "Secret", "Пароль"),
    ("wiz_test", "Test", "Проверить"),
    ("wiz_save_next", "Save and go on", "Сохранить и дальше"),
    ("wiz_ami_ok", "Logged in. Asterisk", "Вход выполнен. Asterisk"),
    ("wiz_ami_failed", "The test failed", "Проверка не прошла"),
    ("wiz_endpoint", "Endpoint", "Абонент"),
    ("wiz_kind", "Kind", "Тип"),
    ("wiz_state", "State", "Состояние"),
    ("wiz_trunk", "trunk", "линия"),
    ("wiz_phone", "phone", "телефон"),
    (
        "wiz_no_probe",
        "This ringlink cannot run connection tests.",
        "Этот ringlink не умеет проверять подключения.",
    ),
    ("wiz_webhook", "Incoming webhook", "Входящий вебхук"),
    (
        "wiz_webhook_intro",
        "Bitrix24 → Developer resources → Other → Inbound webhook, with the telephony, crm, user and task scopes.",
        "Битрикс24 → Разработчикам → Другое → Входящий вебхук, с правами telephony, crm, user и task.",
    ),
    ("wiz_webhook_url", "Webhook URL", "Адрес вебхука"),
    ("wiz_webhook_missing", "Enter the webhook URL.", "Введите адрес вебхука."),
    ("wiz_crm_ok", "Bitrix24 answers as", "Битрикс24 отвечает от имени"),
    ("wiz_crm_failed", "The test failed", "Проверка не прошла"),
    ("wiz_app", "Local application", "Локальное приложение"),
    (
        "wiz_app_intro",
        "Create a local application (server-side, scopes telephony, crm, user, task) and give it this handler and install path on ringlink's address:",
        "Создайте локальное приложение (серверное, права telephony, crm, user, task) и укажите ему обработчик и путь установки на адресе ringlink:",
    ),
    ("wiz_app_installed", "Installed for", "Установлено для"),
    (
        "wiz_app_waiting",
        "No installation received yet: install the application in Bitrix24, then reload this page.",
        "Установка ещё не получена: установите приложение в Битрикс24 и обновите страницу.",
    ),
    (
        "wiz_no_install",
        "No application installation was received yet.",
        "Установка приложения ещё не получена.",
    ),
    (
        "wiz_restart",
        "Saved; used after a restart of ringlink",
        "Сохранено; действует после перезапуска ringlink",
    ),
    (
        "wiz_trunks_intro",
        "One row per trunk: the PJSIP endpoint, the number (DID) calls come in on, a name, the lead source (CRM_SOURCE, e.g. CALL) and the Bitrix24 user ID responsible for its calls.",
        "По строке на линию: PJSIP-абонент, номер (DID), на который приходят звонки, название, источник лида (CRM_SOURCE, например CALL) и ID ответственного в Битрикс24.",
    ),
    ("wiz_trunk_number", "Number", "Номер"),
    ("wiz_trunk_name", "Name", "Название"),
    ("wiz_trunk_source", "Lead source", "Источник лида"),
    ("wiz_trunk_responsible", "Responsible (user ID)", "Ответственный (ID)"),
    (
        "wiz_call_intro",
        "Call your number now: the call shows here as soon as ringlink journals it (the page reloads every 3 s). Connection settings changed on the previous pages apply after a restart.",
        "Позвоните на свой номер: звонок появится здесь, как только ringlink его запишет (страница обновляется каждые 3 с). Изменённые настройки подключений действуют после перезапуска.",
    ),
    ("wiz_call_arrived", "A call arrived:", "Звонок пришёл:"),
    ("wiz_done", "Done: to the status page", "Готово: на страницу состояния"),
    ("wiz_reachable", "reachable", "доступен"),
    ("wiz_unreachable", "not reachable", "недоступен"),
    ("wiz_not_tried", "not tried yet", "ещё не запрашивался"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &str, cookie: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_LANGUAGE, accept.parse().expect("header"));
        if let Some(c) = cookie {
            h.insert(header::COOKIE, c.parse().expect("header"));
        }
        h
    }

    #[test]
    fn browser_language_then_the_switch() {
        assert_eq!(Lang::of(&headers("ru-RU,ru;q=0.9,en;q=0.8", None)), Lang::Ru);
        assert_eq!(Lang::of(&headers("de-DE,en;q=0.5,ru;q=0.3", None)), Lang::En);
        assert_eq!(Lang::of(&headers("fr", None)), Lang::En);
        assert_eq!(Lang::of(&headers("ru", Some("ringlink_lang=en"))), Lang::En);
    }

    #[test]
    fn every_key_has_both_languages() {
        for (key, en, ru) in TEXTS {
            assert!(!en.is_empty() && !ru.is_empty(), "{key}");
        }
    }
}
