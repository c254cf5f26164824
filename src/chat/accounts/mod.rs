//! Accounts: users who log in exactly as Meteor's and Rocket.Chat's clients do.
//!
//! Owns the `users` collection in Meteor's and Rocket.Chat's shape (`username`,
//! `emails[{address, verified}]`, `name`, `roles`, `status`, `active`, `type`,
//! `services.password.bcrypt`, `services.resume.loginTokens[{when, hashedToken}]`), password
//! and resume logins, tokens, logouts, new users, the first administrator and the `general`
//! channel a fresh store starts with. The typed API here is what the DDP methods
//! (`methods.rs`) and REST routes call, so both run the same checks. It must not know about
//! sessions or HTTP: a connection is a `ConnectionHandle`, a caller's writes go to a
//! [`WriteRecorder`].

pub mod avatars;
pub mod limiter;
pub mod methods;
pub mod preferences;
pub mod profile;
pub mod secrets;
pub mod tokens;

use super::hooks::{after_hook, allow_hook, keeping, will_hook, Point};
use super::permissions::user_roles::NameKind;
use crate::chat::call::Call;
use crate::chat::collections::{CLAIMS, ROOMS, USERS};
use crate::engine::connections::Connections;
use crate::engine::error::ServiceError;
use crate::model::query::Selector;
use crate::model::{Document, MeteorError, Value};
use crate::storage::{FindOptions, Store, UpdateOptions};
use std::sync::Arc;

/// The fields of a new user a hook's rewrite may not change (who it is and its secrets).
const FIXED_USER_FIELDS: &[&str] = &["_id", "username", "emails", "services", "roles"];

/// What any logged-in user sees of another user (Rocket.Chat's default user fields): no
/// `emails`, `roles`, `statusConnection`; the rest of [`PUBLIC_USER_FIELDS`] needs
/// `view-full-other-user-info`.
pub const OTHER_USER_FIELDS: &[&str] = &[
    "username",
    "name",
    "nickname",
    "status",
    "statusText",
    "utcOffset",
    "type",
    "active",
    "bio",
    "avatarETag",
];

/// The fields of a user any client may see of its own document (never `services`).
pub const PUBLIC_USER_FIELDS: &[&str] = &[
    "username",
    "emails",
    "name",
    "roles",
    "status",
    "statusConnection",
    "statusText",
    "active",
    "type",
    "profile",
    "utcOffset",
    "avatarETag",
    "settings",
    "language",
    "services.totp.enabled",
    "services.email2fa.enabled",
];
/// The attachment under which a connection keeps the hash of the token it logged in with.
pub const TOKEN_ATTACHMENT: &str = "loginTokenHash";

/// A password that must never reach a log: `Debug` shows nothing of it.
pub use crate::model::secret::Secret;

/// The first administrator, from `ADMIN_USERNAME` / `ADMIN_PASS` / `ADMIN_EMAIL`.
#[derive(Clone, Debug)]
pub struct AdminSeed {
    pub username: String,
    pub password: Secret,
    pub email: Option<String>,
}

/// How accounts behave.
#[derive(Clone, Debug)]
pub struct AccountsConfig {
    /// bcrypt's cost for new password hashes (Meteor: 10).
    pub bcrypt_cost: u32,
    /// The first administrator; without it, one with a generated password is logged once.
    pub admin: Option<AdminSeed>,
    /// How long a login token lasts when the setting `Accounts_LoginExpiration` is absent
    /// (90 days).
    pub login_expiration_days: f64,
    /// Whether anyone may create an account when the setting `Accounts_RegistrationForm`
    /// is absent.
    pub registration_open: bool,
    /// Login attempts allowed per connection per window (Meteor's rule: 5 per 10 s); the
    /// `DDP_Rate_Limit_Login_*` settings override this once the settings are attached.
    pub login_attempts_per_connection: u32,
    pub login_attempt_window: std::time::Duration,
    /// Failed logins after which a client address, or a user, is blocked until the failure
    /// window ends (Rocket.Chat: 50 per address, 10 per user, 5 minutes). Only failures
    /// count, so many people behind one address still log in. The
    /// `Block_Multiple_Failed_Logins_*` settings override these.
    pub failures_per_address: u32,
    pub failures_per_user: u32,
    pub failure_window: std::time::Duration,
}

/// Why an account may not be created now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationRefused {
    /// `Accounts_RegistrationForm` is `Disabled`.
    Closed,
    /// `Secret URL`, and the caller did not bring the secret.
    SecretNeeded,
}

impl From<RegistrationRefused> for ServiceError {
    fn from(refused: RegistrationRefused) -> Self {
        ServiceError::Client(match refused {
            // Meteor's own refusal when accounts may not be created from a client.
            RegistrationRefused::Closed => MeteorError::new(403, "Signups forbidden"),
            RegistrationRefused::SecretNeeded => MeteorError::new(
                "error-user-registration-secret",
                "User registration is only allowed via Secret URL",
            ),
        })
    }
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            bcrypt_cost: 10,
            admin: None,
            login_expiration_days: 90.0,
            registration_open: true,
            login_attempts_per_connection: 5,
            login_attempt_window: std::time::Duration::from_secs(10),
            failures_per_address: 50,
            failures_per_user: 10,
            failure_window: std::time::Duration::from_secs(300),
        }
    }
}

/// Who is logging in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserSelector {
    Username(String),
    Email(String),
    Id(String),
}

/// A successful login: Meteor's `{id, token, tokenExpires, type}`.
#[derive(Clone, Debug)]
pub struct LoginResult {
    pub id: String,
    pub token: String,
    pub token_hash: String,
    pub token_expires_ms: f64,
    /// `password` or `resume`.
    pub kind: &'static str,
}

impl LoginResult {
    /// The method result a Meteor client expects.
    pub fn to_value(&self, with_type: bool) -> Value {
        let mut doc = Document::default();
        doc.insert("id".into(), Value::from(self.id.as_str()));
        doc.insert("token".into(), Value::from(self.token.as_str()));
        doc.insert("tokenExpires".into(), Value::Date(self.token_expires_ms));
        if with_type {
            doc.insert("type".into(), Value::from(self.kind));
        }
        Value::Object(doc)
    }
}

/// A new account.
#[derive(Clone, Debug, Default)]
pub struct NewUser {
    /// `None` for Rocket.Chat's `registerUser`, whose user picks a name later
    /// (`setUsername`).
    pub username: Option<String>,
    pub email: Option<String>,
    /// The password's SHA-256 hex digest.
    pub password_digest: Option<String>,
    pub name: Option<String>,
    pub roles: Vec<String>,
}

/// The Accounts service.
pub struct Accounts {
    store: Arc<dyn Store>,
    /// Where `Accounts_LoginExpiration`, `Accounts_RegistrationForm` and the login limits
    /// are read.
    settings: Arc<super::settings::Settings>,
    /// Users by name and address ignoring case, kept from the change events.
    names: Arc<super::permissions::user_roles::UserRoles>,
    /// The hook points of user creation and login.
    hooks: Arc<super::hooks::Hooks>,
    connections: Arc<Connections>,
    config: AccountsConfig,
    per_connection: limiter::Limiter,
    /// Failed logins, counted in the store so every instance sees them.
    failures_by_address: limiter::SharedFailures,
    failures_by_user: limiter::SharedFailures,
    /// A hash of nothing anyone knows, checked when a login names no user with a password,
    /// so that answer takes as long as a wrong password does.
    decoy_hash: tokio::sync::OnceCell<String>,
    /// Which user holds which login token.
    tokens: Arc<tokens::TokenIndex>,
}

use crate::engine::build::{doc, now_ms, selector, update};

/// A selector matching `field` equal to `text` ignoring case: the text is escaped, so it
/// is a value, never a pattern.
fn case_insensitive(field: &str, text: &str) -> Result<Selector, ServiceError> {
    let mut d = Document::default();
    d.insert(
        field.into(),
        Value::Regex {
            pattern: format!("^{}$", regex::escape(text)),
            flags: "i".into(),
        },
    );
    Selector::parse(&d).map_err(|e| ServiceError::internal(e.0))
}

/// How long a look-up by name waits for the name index to catch up before it searches the
/// store instead.
const INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether `user` carries `text` as its username (or one of its addresses): `Some(true)`
/// exactly, `Some(false)` ignoring case only, `None` not at all.
fn name_match(user: &Document, kind: NameKind, text: &str) -> Option<bool> {
    let values: Vec<&str> = match kind {
        NameKind::Username => user
            .get("username")
            .and_then(Value::as_str)
            .into_iter()
            .collect(),
        NameKind::Email => match user.get("emails") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|e| e.as_object()?.get("address")?.as_str())
                .collect(),
            _ => Vec::new(),
        },
    };
    if values.contains(&text) {
        Some(true)
    } else if values
        .iter()
        .any(|v| v.to_lowercase() == text.to_lowercase())
    {
        Some(false)
    } else {
        None
    }
}

/// The key failures of one user count under, however the login named it.
/// Whose failures a login counts against: the user's id when the name finds a user, so
/// its username, address and id share one count; else the name given, as given.
fn failure_subject(who: &UserSelector, user: Option<&Document>) -> String {
    if let Some(Value::String(id)) = user.and_then(|u| u.get("_id")) {
        return format!("id:{id}");
    }
    match who {
        UserSelector::Username(n) => format!("username:{}", n.to_lowercase()),
        UserSelector::Email(a) => format!("email:{}", a.to_lowercase()),
        UserSelector::Id(id) => format!("id:{id}"),
    }
}

fn blocked(code: &str, reason: &str, left: std::time::Duration) -> ServiceError {
    ServiceError::Client(
        MeteorError::new(code, reason)
            .with_details(serde_json::json!({"timeToReset": left.as_millis() as u64})),
    )
}

/// A password that could not be checked now: 503, so the client tries again later and the
/// attempt is not counted as a wrong password.
fn server_busy(cause: secrets::HashBusy) -> ServiceError {
    tracing::warn!(cause = %cause, "password check refused");
    ServiceError::Client(MeteorError::new(503, "Server busy, try again later"))
}

fn inactive() -> ServiceError {
    ServiceError::Client(MeteorError::new(
        "error-user-is-not-activated",
        "User is not activated",
    ))
}

fn forbidden(reason: &str) -> ServiceError {
    ServiceError::Client(MeteorError::new(403, reason))
}

fn str_at<'a>(doc: &'a Document, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let value = doc.get(*first)?;
    if rest.is_empty() {
        return Some(value);
    }
    str_at(value.as_object()?, rest)
}

impl Accounts {
    /// The service over `store`: the users' index on `username` is made and their login
    /// tokens are read into memory.
    pub async fn start(
        store: Arc<dyn Store>,
        connections: Arc<Connections>,
        config: AccountsConfig,
        settings: Arc<super::settings::Settings>,
        names: Arc<super::permissions::user_roles::UserRoles>,
        hooks: Arc<super::hooks::Hooks>,
        follower: &crate::engine::feed::Follower,
    ) -> Result<Arc<Self>, ServiceError> {
        store
            .ensure_index(
                USERS,
                crate::model::query::Sort::parse(&doc(serde_json::json!({"username": 1}))?)
                    .map_err(|e| ServiceError::internal(e.0))?,
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        let tokens = tokens::TokenIndex::start(store.clone(), follower).await?;
        // A token removed by another instance (`logoutOtherClients`, a logout, a reset
        // password there) or by a script logs this instance's sessions using it out.
        let sessions = Arc::downgrade(&connections);
        tokens.on_revoked(Arc::new(move |user_id, hashes| {
            let Some(sessions) = sessions.upgrade() else {
                return;
            };
            for connection in sessions.of_user(user_id) {
                let used = connection.attachment(TOKEN_ATTACHMENT);
                if used.is_some_and(|h| hashes.iter().any(|gone| **gone == *h)) {
                    connection.set_attachment(TOKEN_ATTACHMENT, None);
                    connection.log_out();
                }
            }
        }));
        Ok(Arc::new(Self {
            tokens,
            per_connection: limiter::Limiter::new(),
            failures_by_address: limiter::SharedFailures::new(store.clone(), "ip"),
            failures_by_user: limiter::SharedFailures::new(store.clone(), "user"),
            decoy_hash: tokio::sync::OnceCell::new(),
            store,
            settings,
            names,
            hooks,
            connections,
            config,
        }))
    }

    /// Whether `given` is the registration secret `Accounts_RegistrationForm_SecretURL`
    /// (never while that is empty).
    pub fn is_registration_secret(&self, given: &str) -> bool {
        let expected = self
            .settings
            .value("Accounts_RegistrationForm_SecretURL")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        !expected.is_empty() && secrets::same_secret(given, &expected)
    }

    /// Whether someone may create an account, as `Accounts_RegistrationForm` says: `Public`
    /// lets anyone, `Disabled` no one, and `Secret URL` only who brings the secret set in
    /// `Accounts_RegistrationForm_SecretURL` (no secret set lets no one in).
    pub fn may_register(&self, secret: Option<&str>) -> Result<(), RegistrationRefused> {
        let form = self.settings.value("Accounts_RegistrationForm");
        match form {
            Some(Value::String(form)) if form == "Disabled" => Err(RegistrationRefused::Closed),
            Some(Value::String(form)) if form == "Secret URL" => match secret {
                Some(given) if self.is_registration_secret(given) => Ok(()),
                _ => Err(RegistrationRefused::SecretNeeded),
            },
            Some(Value::String(_)) => Ok(()),
            _ if self.config.registration_open => Ok(()),
            _ => Err(RegistrationRefused::Closed),
        }
    }

    pub fn config(&self) -> &AccountsConfig {
        &self.config
    }

    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// A limit as the settings say now (`enabled`, `allowed`, the window in `window_ms`
    /// milliseconds, or in minutes when `window_minutes`), the configuration's without
    /// settings; `None` when switched off.
    fn rule(
        &self,
        enabled: &str,
        allowed: &str,
        window: &str,
        window_minutes: bool,
        fallback: (u32, std::time::Duration),
    ) -> Option<limiter::Rule> {
        let settings = &self.settings;
        if matches!(settings.value(enabled), Some(Value::Bool(false))) {
            return None;
        }
        let unit_ms = if window_minutes { 60_000.0 } else { 1.0 };
        let fallback_window = fallback.1.as_millis() as f64 / unit_ms;
        let window_ms = settings.number(window, fallback_window).max(0.0) * unit_ms;
        Some(limiter::Rule {
            allowed: settings.number(allowed, f64::from(fallback.0)).max(0.0) as u32,
            window: std::time::Duration::from_millis(window_ms as u64),
        })
    }

    /// Meteor's rule on `login`/`createUser` calls per connection.
    fn login_rule(&self) -> Option<limiter::Rule> {
        self.rule(
            "DDP_Rate_Limit_Login_Enabled",
            "DDP_Rate_Limit_Login_Requests_Allowed",
            "DDP_Rate_Limit_Login_Interval_Time",
            false,
            (
                self.config.login_attempts_per_connection,
                self.config.login_attempt_window,
            ),
        )
    }

    /// Rocket.Chat's lockouts after failed logins, per user and per client address; both
    /// off when `Block_Multiple_Failed_Logins_Enabled` is false.
    fn failure_rule(&self, by_address: bool) -> Option<limiter::Rule> {
        if matches!(
            self.settings.value("Block_Multiple_Failed_Logins_Enabled"),
            Some(Value::Bool(false))
        ) {
            return None;
        }
        if by_address {
            self.rule(
                "Block_Multiple_Failed_Logins_By_Ip",
                "Block_Multiple_Failed_Logins_Attempts_Until_Block_By_Ip",
                "Block_Multiple_Failed_Logins_Time_To_Unblock_By_Ip_In_Minutes",
                true,
                (self.config.failures_per_address, self.config.failure_window),
            )
        } else {
            self.rule(
                "Block_Multiple_Failed_Logins_By_User",
                "Block_Multiple_Failed_Logins_Attempts_Until_Block_By_User",
                "Block_Multiple_Failed_Logins_Time_To_Unblock_By_User_In_Minutes",
                true,
                (self.config.failures_per_user, self.config.failure_window),
            )
        }
    }

    /// Counts a login attempt from `connection` (refused past Meteor's per-connection rule).
    pub fn count_login_attempt(&self, connection: Option<&str>) -> Result<(), ServiceError> {
        if let (Some(id), Some(rule)) = (connection, self.login_rule()) {
            self.per_connection.hit(id, rule)?;
        }
        Ok(())
    }

    /// Rocket.Chat's rule on `registerUser`: `Rate_Limiter_Limit_RegisterUser` registrations
    /// (1) per `API_Enable_Rate_Limiter_Limit_Time_Default` (60 s) from one `key` (a
    /// connection, or REST's client address); off with `API_Enable_Rate_Limiter`.
    pub fn count_registration(&self, key: &str) -> Result<(), ServiceError> {
        let settings = &self.settings;
        if !settings.flag("API_Enable_Rate_Limiter", true) {
            return Ok(());
        }
        let Some(rule) = limiter::Rule::from_numbers(
            settings.number("Rate_Limiter_Limit_RegisterUser", 1.0),
            settings.number("API_Enable_Rate_Limiter_Limit_Time_Default", 60_000.0),
        ) else {
            return Ok(());
        };
        self.per_connection
            .hit(&format!("register:{key}"), rule)
            .map_err(ServiceError::Client)
    }

    /// Counts a guess at a secret that is not a password (a registration link) as a login
    /// attempt: limited per connection, and refused from an address blocked by failures.
    pub async fn count_secret_guess(
        &self,
        connection: Option<&str>,
        address: Option<std::net::IpAddr>,
    ) -> Result<(), ServiceError> {
        self.count_login_attempt(connection)?;
        self.check_address_not_blocked(address).await
    }

    /// Refuses a login for a user whose failures blocked it (`key`: [`failure_subject`]).
    async fn check_user_not_blocked(&self, key: &str) -> Result<(), ServiceError> {
        let Some(rule) = self.failure_rule(false) else {
            return Ok(());
        };
        match self.failures_by_user.blocked_for(key, rule).await? {
            Some(left) => Err(blocked(
                "error-login-blocked-for-user",
                "Login has been temporarily blocked For User",
                left,
            )),
            None => Ok(()),
        }
    }

    /// Refuses a password login from an address its failures blocked. Only password
    /// attempts are refused by address: a resume token is a secret already held, and the
    /// people behind one NAT address must not be locked out by someone else's guessing.
    async fn check_address_not_blocked(
        &self,
        address: Option<std::net::IpAddr>,
    ) -> Result<(), ServiceError> {
        let Some((ip, rule)) = address.zip(self.failure_rule(true)) else {
            return Ok(());
        };
        match self
            .failures_by_address
            .blocked_for(&ip.to_string(), rule)
            .await?
        {
            Some(left) => Err(blocked(
                "error-login-blocked-for-ip",
                "Login has been temporarily blocked For IP",
                left,
            )),
            None => Ok(()),
        }
    }

    /// A password login, however it arrives (DDP, SockJS, REST, `method.call(Anon)`): refused
    /// while the address or the user is blocked by failures, counted against both when the
    /// password is wrong. The user is one user whichever way it is named (username, address
    /// or id), and a name that matches no one costs as much time as a wrong password.
    pub async fn password_login(
        &self,
        call: &Call<'_>,
        who: &UserSelector,
        digest: &str,
    ) -> Result<LoginResult, ServiceError> {
        let address = call.address();
        self.check_address_not_blocked(address).await?;
        let user = self.find_user(who).await?;
        let subject = failure_subject(who, user.as_ref());
        self.check_user_not_blocked(&subject).await?;
        let outcome = self.verify_login(call, user, digest).await;
        if let Err(ServiceError::Client(e)) = &outcome {
            if e.error.to_string() == "403" {
                self.record_login_failure(&subject, address).await;
            }
        }
        outcome
    }

    /// Checks `digest` against `user`'s password; the decoy hash stands in for a user that
    /// is missing or has no password, so every refusal costs one bcrypt.
    async fn verify_login(
        &self,
        call: &Call<'_>,
        user: Option<Document>,
        digest: &str,
    ) -> Result<LoginResult, ServiceError> {
        let Some(user) = user else {
            return self.refuse_after_decoy(digest, "User not found").await;
        };
        let Some(Value::String(hash)) = str_at(&user, &["services", "password", "bcrypt"]) else {
            return self
                .refuse_after_decoy(digest, "User has no password set")
                .await;
        };
        if !secrets::verify_password(digest.to_owned(), hash.clone())
            .await
            .map_err(server_busy)?
        {
            return Err(forbidden("Incorrect password"));
        }
        Self::check_active(&user)?;
        let id = Self::user_id(&user)?;
        allow_hook!(self.hooks, Point::UserWillLogIn, |hook| hook
            .user_will_log_in(&user))?;
        let result = self.issue_token(call, &id, now_ms(), "password").await?;
        after_hook!(self.hooks, Point::UserHasLoggedIn, |hook| hook
            .user_has_logged_in(&user));
        Ok(result)
    }

    /// Runs the login hook points for a login that issued no password check (a resume, a
    /// user just created): reads the user only when some hook is there to see it.
    async fn login_through_hooks(&self, user_id: &str) -> Result<(), ServiceError> {
        if !self.hooks.has(Point::UserWillLogIn) && !self.hooks.has(Point::UserHasLoggedIn) {
            return Ok(());
        }
        let Some(user) = self
            .find_users(selector(serde_json::json!({"_id": user_id}))?, 1)
            .await?
            .pop()
        else {
            return Err(forbidden("User not found"));
        };
        allow_hook!(self.hooks, Point::UserWillLogIn, |hook| hook
            .user_will_log_in(&user))?;
        after_hook!(self.hooks, Point::UserHasLoggedIn, |hook| hook
            .user_has_logged_in(&user));
        Ok(())
    }

    /// Spends a bcrypt check on the decoy hash, then refuses with `reason`.
    async fn refuse_after_decoy(
        &self,
        digest: &str,
        reason: &str,
    ) -> Result<LoginResult, ServiceError> {
        let decoy = self.decoy_hash().await?;
        let _ = secrets::verify_password(digest.to_owned(), decoy)
            .await
            .map_err(server_busy)?;
        Err(forbidden(reason))
    }

    /// The hash a missing user's login is checked against, made once at this process's cost.
    async fn decoy_hash(&self) -> Result<String, ServiceError> {
        self.decoy_hash
            .get_or_try_init(|| async {
                let nobody = secrets::password_digest(&crate::model::random::random_secret());
                secrets::hash_password(nobody, self.config.bcrypt_cost)
                    .await
                    .map_err(server_busy)
            })
            .await
            .cloned()
    }

    /// Counts a failed login against the address and the user it named.
    async fn record_login_failure(&self, subject: &str, address: Option<std::net::IpAddr>) {
        // A count that cannot be written is logged: the refusal itself stands.
        if let Some(rule) = self.failure_rule(false) {
            if let Err(err) = self.failures_by_user.count(subject, rule).await {
                tracing::warn!(cause = %err, "a failed login could not be counted");
            }
        }
        if let Some((ip, rule)) = address.zip(self.failure_rule(true)) {
            if let Err(err) = self.failures_by_address.count(&ip.to_string(), rule).await {
                tracing::warn!(cause = %err, "a failed login could not be counted");
            }
        }
    }

    async fn find_users(
        &self,
        selector: Selector,
        limit: usize,
    ) -> Result<Vec<Document>, ServiceError> {
        self.store
            .find(
                USERS,
                FindOptions {
                    selector,
                    limit: Some(limit),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))
    }

    /// The user `who` names: an exact match first, then one ignoring case if exactly one.
    pub async fn find_user(&self, who: &UserSelector) -> Result<Option<Document>, ServiceError> {
        let (field, text) = match who {
            UserSelector::Id(id) => {
                return Ok(self
                    .find_users(selector(serde_json::json!({"_id": id}))?, 1)
                    .await?
                    .pop())
            }
            UserSelector::Username(name) => ("username", name),
            UserSelector::Email(address) => ("emails.address", address),
        };
        // The claim comet made when it created the user names it by primary key; users
        // written by others (Rocket.Chat) have none and are searched for below.
        if let Some(user) = self.user_by_claim(who).await? {
            return Ok(Some(user));
        }
        // The index is trusted once it has applied every change written so far (a moment's
        // wait); then it names every user whose name matches ignoring case.
        let index = if self.store.kind() == "embedded" && self.names.caught_up(INDEX_WAIT).await {
            Some(&self.names)
        } else {
            None
        };
        if let Some(names) = index {
            let kind = match who {
                UserSelector::Username(_) => NameKind::Username,
                _ => NameKind::Email,
            };
            let mut exact = None;
            let mut loose = Vec::new();
            for id in names.ids_named(kind, text).into_iter().take(8) {
                let Some(user) = self
                    .find_users(selector(serde_json::json!({"_id": id}))?, 1)
                    .await?
                    .pop()
                else {
                    continue;
                };
                match name_match(&user, kind, text) {
                    Some(true) => exact = Some(user),
                    Some(false) => loose.push(user),
                    None => {}
                }
            }
            return Ok(exact.or_else(|| if loose.len() == 1 { loose.pop() } else { None }));
        }
        let mut exact = Document::default();
        exact.insert(field.into(), Value::from(text.as_str()));
        let exact = Selector::parse(&exact).map_err(|e| ServiceError::internal(e.0))?;
        if let Some(user) = self.find_users(exact, 1).await?.pop() {
            return Ok(Some(user));
        }
        let mut loose = self.find_users(case_insensitive(field, text)?, 2).await?;
        Ok(if loose.len() == 1 { loose.pop() } else { None })
    }

    /// The user a uniqueness claim names, if it still carries that name.
    async fn user_by_claim(&self, who: &UserSelector) -> Result<Option<Document>, ServiceError> {
        let (kind, text) = match who {
            UserSelector::Username(name) => ("username", name),
            UserSelector::Email(address) => ("email", address),
            UserSelector::Id(_) => return Ok(None),
        };
        let claim = self
            .store
            .find(
                CLAIMS,
                FindOptions {
                    selector: selector(
                        serde_json::json!({"_id": format!("{kind}:{}", text.to_lowercase())}),
                    )?,
                    limit: Some(1),
                    ..FindOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        let Some(owner) = claim
            .first()
            .and_then(|c| c.get("owner"))
            .and_then(Value::as_str)
        else {
            return Ok(None);
        };
        let Some(user) = self
            .find_users(selector(serde_json::json!({"_id": owner}))?, 1)
            .await?
            .pop()
        else {
            return Ok(None);
        };
        let still_named = match who {
            UserSelector::Username(name) => user
                .get("username")
                .and_then(Value::as_str)
                .is_some_and(|u| u.to_lowercase() == name.to_lowercase()),
            UserSelector::Email(address) => match user.get("emails") {
                Some(Value::Array(emails)) => emails.iter().any(|e| {
                    e.as_object()
                        .and_then(|e| e.get("address"))
                        .and_then(Value::as_str)
                        .is_some_and(|a| a.to_lowercase() == address.to_lowercase())
                }),
                _ => false,
            },
            UserSelector::Id(_) => false,
        };
        Ok(still_named.then_some(user))
    }

    fn check_active(user: &Document) -> Result<(), ServiceError> {
        if user.get("active") == Some(&Value::Bool(false)) {
            return Err(inactive());
        }
        Ok(())
    }

    fn user_id(user: &Document) -> Result<String, ServiceError> {
        match user.get("_id") {
            Some(Value::String(id)) => Ok(id.clone()),
            _ => Err(ServiceError::internal("user without a string _id")),
        }
    }

    /// Logs in a user this call just created with a password (Meteor's `createUser`).
    pub async fn log_in_created(
        &self,
        call: &Call<'_>,
        user_id: &str,
    ) -> Result<LoginResult, ServiceError> {
        self.login_through_hooks(user_id).await?;
        self.issue_token(call, user_id, now_ms(), "password").await
    }

    /// Stores a new token for `user_id` dated `when` and returns it.
    async fn issue_token(
        &self,
        call: &Call<'_>,
        user_id: &str,
        when: f64,
        kind: &'static str,
    ) -> Result<LoginResult, ServiceError> {
        let token = secrets::new_token();
        let token_hash = secrets::hash_token(&token);
        let ack = self.update_user(user_id, serde_json::json!({
                    "$push": {"services.resume.loginTokens": {"when": {"$date": when}, "hashedToken": token_hash}},
                    "$set": {"_updatedAt": {"$date": now_ms()}},
                })).await?;
        if ack.matched == 0 {
            return Err(forbidden("User not found"));
        }
        call.record_write(ack.seq);
        self.tokens.added(user_id, &token_hash, when, ack.seq);
        Ok(LoginResult {
            id: user_id.to_owned(),
            token,
            token_hash,
            token_expires_ms: when + self.lifetime_ms(),
            kind,
        })
    }

    /// Removes login tokens past their lifetime from every user (deployment upkeep, under
    /// a lease); how many users had some. A token past its lifetime is refused anyway:
    /// this keeps the documents from growing.
    pub async fn remove_expired_tokens(&self) -> Result<u64, ServiceError> {
        let cutoff = now_ms() - self.lifetime_ms();
        let ack = self
            .store
            .update(
                USERS,
                selector(serde_json::json!({
                    "services.resume.loginTokens.when": {"$lt": {"$date": cutoff}}
                }))?,
                update(serde_json::json!({
                    "$pull": {"services.resume.loginTokens": {"when": {"$lt": {"$date": cutoff}}}}
                }))?,
                UpdateOptions {
                    upsert: false,
                    multi: true,
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        Ok(ack.modified)
    }

    fn lifetime_ms(&self) -> f64 {
        let days = self.settings.number(
            "Accounts_LoginExpiration",
            self.config.login_expiration_days,
        );
        days * 24.0 * 3600.0 * 1000.0
    }

    /// The user holding `token` and when the token was issued; refused if unknown or expired.
    pub async fn user_for_token(
        &self,
        token: &str,
    ) -> Result<(Document, f64, String), ServiceError> {
        let hash = secrets::hash_token(token);
        let found = match self.tokens.lookup(&hash) {
            // The index names the user; the document (read by primary key) decides.
            Some(known) => self
                .find_users(selector(serde_json::json!({"_id": known.user_id}))?, 1)
                .await?
                .pop(),
            None => self.tokens.search(&hash).await?,
        };
        let Some(user) = found else {
            return Err(forbidden(
                "You've been logged out by the server. Please log in again.",
            ));
        };
        let when = match str_at(&user, &["services", "resume", "loginTokens"]) {
            Some(Value::Array(tokens)) => tokens.iter().find_map(|t| {
                let t = t.as_object()?;
                (t.get("hashedToken")?.as_str()? == hash).then(|| match t.get("when") {
                    Some(Value::Date(ms)) => *ms,
                    _ => 0.0,
                })
            }),
            _ => None,
        };
        // A token the index still named but the user no longer holds (removed a moment ago).
        let Some(when) = when else {
            return Err(forbidden(
                "You've been logged out by the server. Please log in again.",
            ));
        };
        if when + self.lifetime_ms() < now_ms() {
            return Err(forbidden("Your session has expired. Please log in again."));
        }
        Self::check_active(&user)?;
        Ok((user, when, hash))
    }

    /// Logs in with a resume token: the same token comes back. Answered from the token
    /// index when it knows the token; from the store otherwise.
    pub async fn login_with_resume(&self, token: &str) -> Result<LoginResult, ServiceError> {
        let token_hash = secrets::hash_token(token);
        if let Some(known) = self.tokens.lookup(&token_hash) {
            if known.when + self.lifetime_ms() < now_ms() {
                return Err(forbidden("Your session has expired. Please log in again."));
            }
            if !known.active {
                return Err(inactive());
            }
            self.login_through_hooks(&known.user_id).await?;
            return Ok(LoginResult {
                id: known.user_id,
                token: token.to_owned(),
                token_hash,
                token_expires_ms: known.when + self.lifetime_ms(),
                kind: "resume",
            });
        }
        let (user, when, token_hash) = self.user_for_token(token).await?;
        let id = Self::user_id(&user)?;
        self.login_through_hooks(&id).await?;
        Ok(LoginResult {
            id,
            token: token.to_owned(),
            token_hash,
            token_expires_ms: when + self.lifetime_ms(),
            kind: "resume",
        })
    }

    /// Removes tokens of `user_id` (the one with `token_hash`, or every one but it when
    /// `all_but` is set), and logs out the live connections that used them.
    pub async fn remove_tokens(
        &self,
        call: &Call<'_>,
        user_id: &str,
        token_hash: &str,
        all_but: bool,
    ) -> Result<(), ServiceError> {
        let condition = if all_but {
            serde_json::json!({"hashedToken": {"$ne": token_hash}})
        } else {
            serde_json::json!({"hashedToken": token_hash})
        };
        let ack = self
            .update_user(
                user_id,
                serde_json::json!({"$pull": {"services.resume.loginTokens": condition}}),
            )
            .await?;
        call.record_write(ack.seq);
        self.tokens.removed(user_id, token_hash, all_but, ack.seq);
        for connection in self.connections.of_user(user_id) {
            let used = connection.attachment(TOKEN_ATTACHMENT);
            let revoked = match &used {
                Some(hash) => (hash == token_hash) != all_but,
                None => false,
            };
            if revoked {
                connection.set_attachment(TOKEN_ATTACHMENT, None);
                connection.log_out();
            }
        }
        Ok(())
    }

    /// A fresh token with the same issue date as `token_hash`'s (Meteor's `getNewToken`).
    pub async fn new_token(
        &self,
        call: &Call<'_>,
        user_id: &str,
        token_hash: &str,
    ) -> Result<LoginResult, ServiceError> {
        let user = self
            .find_users(selector(serde_json::json!({"_id": user_id}))?, 1)
            .await?
            .pop()
            .ok_or_else(|| forbidden("User not found"))?;
        let when = match str_at(&user, &["services", "resume", "loginTokens"]) {
            Some(Value::Array(tokens)) => tokens.iter().find_map(|t| {
                let t = t.as_object()?;
                (t.get("hashedToken")?.as_str()? == token_hash).then(|| match t.get("when") {
                    Some(Value::Date(ms)) => *ms,
                    _ => now_ms(),
                })
            }),
            _ => None,
        }
        .ok_or_else(|| forbidden("You've been logged out by the server. Please log in again."))?;
        self.issue_token(call, user_id, when, "resume").await
    }

    /// Claims `value` (a lowercase username or address) for `owner`; `false` when it is taken.
    async fn claim(&self, kind: &str, value: &str, owner: &str) -> Result<bool, ServiceError> {
        let claim = doc(
            serde_json::json!({"_id": format!("{kind}:{}", value.to_lowercase()), "owner": owner}),
        )?;
        match self.store.insert(CLAIMS, claim).await {
            Ok(_) => Ok(true),
            Err(crate::storage::StoreError::DuplicateKey(_)) => Ok(false),
            Err(other) => Err(ServiceError::from_store(&other)),
        }
    }

    async fn release(&self, kind: &str, value: &str) {
        if let Ok(by_id) =
            selector(serde_json::json!({"_id": format!("{kind}:{}", value.to_lowercase())}))
        {
            let _ = self
                .store
                .remove(CLAIMS, by_id, crate::storage::RemoveOptions::default())
                .await;
        }
    }

    /// Gives back the username and address `new` claimed (its creation did not happen).
    async fn release_claims(&self, new: &NewUser) {
        if let Some(username) = &new.username {
            self.release("username", username).await;
        }
        if let Some(email) = &new.email {
            self.release("email", email).await;
        }
    }

    /// Creates a user. The username and the address are claimed first (the store refuses a
    /// second claim, so two writers cannot both take a name), and checked against users
    /// written before comet held claims. The user-created hook points run around the write
    /// (joining the default channels is one of them, see `rooms::DefaultChannels`).
    pub async fn create_user(&self, call: &Call<'_>, new: NewUser) -> Result<String, ServiceError> {
        if new.username.is_none() && new.email.is_none() {
            return Err(ServiceError::Client(MeteorError::new(
                400,
                "Need to set a username or email",
            )));
        }
        if new.username.as_deref().is_some_and(|u| !valid_username(u)) {
            return Err(ServiceError::Client(MeteorError::new(
                "error-invalid-username",
                "Invalid username",
            )));
        }
        if new.username.as_deref().is_some_and(reserved_username) {
            return Err(username_reserved());
        }
        // Every way in hands over a digest; the one of "" is an empty password however it came.
        if new
            .password_digest
            .as_deref()
            .is_some_and(|d| d.eq_ignore_ascii_case(&secrets::password_digest("")))
        {
            return Err(ServiceError::Client(MeteorError::new(
                400,
                "Password may not be empty",
            )));
        }
        if let Some(email) = &new.email {
            if !valid_email(email) {
                return Err(ServiceError::Client(MeteorError::new(
                    "error-invalid-email",
                    "Invalid email",
                )));
            }
        }
        let id = crate::model::random::random_id();
        if let Some(username) = &new.username {
            if !self.claim_username(username, &id).await? {
                return Err(ServiceError::Client(MeteorError::new(
                    403,
                    "Username already exists.",
                )));
            }
        }
        if let Some(email) = &new.email {
            if self
                .find_user(&UserSelector::Email(email.clone()))
                .await?
                .is_some()
                || !self.claim("email", email, &id).await?
            {
                if let Some(username) = &new.username {
                    self.release("username", username).await;
                }
                return Err(ServiceError::Client(MeteorError::new(
                    403,
                    "Email already exists.",
                )));
            }
        }
        let mut services = serde_json::json!({"resume": {"loginTokens": []}});
        if let Some(digest) = &new.password_digest {
            let hash = secrets::hash_password(digest.clone(), self.config.bcrypt_cost)
                .await
                .map_err(server_busy)?;
            services["password"] = serde_json::json!({"bcrypt": hash});
        }
        let now = now_ms();
        let roles = if new.roles.is_empty() {
            vec!["user".to_owned()]
        } else {
            new.roles.clone()
        };
        let emails: Vec<serde_json::Value> = new
            .email
            .iter()
            .map(|a| serde_json::json!({"address": a, "verified": false}))
            .collect();
        let mut user = serde_json::json!({
            "_id": id,
            "createdAt": {"$date": now},
            "_updatedAt": {"$date": now},
            "emails": emails,
            "type": "user",
            "status": "offline",
            "active": true,
            "roles": roles,
            "services": services,
        });
        if let Some(username) = &new.username {
            user["username"] = serde_json::json!(username);
        }
        if let Some(name) = &new.name {
            user["name"] = serde_json::json!(name);
        }
        let user = doc(user)?;
        let verdict = will_hook!(
            self.hooks,
            Point::UserWillBeCreated,
            user,
            |hook, current| { hook.user_will_be_created(current) }
        );
        let user = match verdict {
            Ok(None) => user,
            Ok(Some(rewritten)) => keeping(&user, rewritten, FIXED_USER_FIELDS),
            Err(refused) => {
                self.release_claims(&new).await;
                return Err(refused.into());
            }
        };
        let ack = self
            .store
            .insert(USERS, user.clone())
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        call.record_write(ack.seq);
        if new.username.is_some() {
            after_hook!(self.hooks, Point::UserHasBeenCreated, |hook| {
                hook.user_has_been_created(&user, call)
            });
        }
        Ok(id)
    }

    /// Applies `modifier` to the user `user_id`.
    async fn update_user(
        &self,
        user_id: &str,
        modifier: serde_json::Value,
    ) -> Result<crate::storage::UpdateAck, ServiceError> {
        self.store
            .update(
                USERS,
                selector(serde_json::json!({"_id": user_id}))?,
                update(modifier)?,
                UpdateOptions::default(),
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))
    }

    /// Claims `username` for `owner`: refused when a user (one written before comet held
    /// claims included) or another claim has it.
    async fn claim_username(&self, username: &str, owner: &str) -> Result<bool, ServiceError> {
        if self
            .find_user(&UserSelector::Username(username.to_owned()))
            .await?
            .is_some()
        {
            return Ok(false);
        }
        self.claim("username", username, owner).await
    }

    /// Rocket.Chat's `setUsername`: gives `user_id` the name `username` (unique, valid); a
    /// user's first name joins the default channels, as registration does. Returns the name.
    pub async fn set_username(
        &self,
        call: &Call<'_>,
        user_id: &str,
        username: &str,
    ) -> Result<String, ServiceError> {
        if !valid_username(username) {
            return Err(ServiceError::Client(MeteorError::new(
                "error-invalid-username",
                format!("{username} is not a valid username, use only letters, numbers, dots, hyphens and underscores"),
            )));
        }
        if reserved_username(username) {
            return Err(username_reserved());
        }
        let user = self
            .find_users(selector(serde_json::json!({"_id": user_id}))?, 1)
            .await?
            .pop()
            .ok_or_else(|| {
                ServiceError::Client(MeteorError::new("error-invalid-user", "Invalid user"))
            })?;
        let current = user
            .get("username")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if current.as_deref() == Some(username) {
            return Ok(username.to_owned());
        }
        let same_but_case = current
            .as_deref()
            .is_some_and(|c| c.to_lowercase() == username.to_lowercase());
        if !same_but_case && !self.claim_username(username, user_id).await? {
            return Err(ServiceError::Client(MeteorError::new(
                "error-field-unavailable",
                format!("{username} is already in use :("),
            )));
        }
        let ack = self
            .update_user(
                user_id,
                serde_json::json!({
                    "$set": {"username": username, "_updatedAt": {"$date": now_ms()}},
                }),
            )
            .await?;
        call.record_write(ack.seq);
        match &current {
            Some(old) if !same_but_case => self.release("username", old).await,
            Some(_) => {}
            None => {
                // A user created without a username counts as created once it has one.
                if let Some(user) = self
                    .find_users(selector(serde_json::json!({"_id": user_id}))?, 1)
                    .await?
                    .pop()
                {
                    after_hook!(self.hooks, Point::UserHasBeenCreated, |hook| {
                        hook.user_has_been_created(&user, call)
                    });
                }
            }
        }
        Ok(username.to_owned())
    }

    /// First start on an empty store: the administrator and the `general` channel. A store
    /// that has any user is left as it is.
    pub async fn bootstrap(&self) -> Result<(), ServiceError> {
        let any = self.find_users(Selector::everything(), 1).await?;
        if !any.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let general = doc(serde_json::json!({
            "_id": "GENERAL", "t": "c", "name": "general", "fname": "general",
            "default": true, "usersCount": 0, "msgs": 0, "ro": false, "sysMes": true,
            "ts": {"$date": now}, "_updatedAt": {"$date": now},
        }))?;
        crate::engine::build::insert_default(&*self.store, ROOMS, general).await?;
        let (seed, generated) = match &self.config.admin {
            Some(seed) => (seed.clone(), false),
            None => (
                AdminSeed {
                    username: "admin".into(),
                    password: Secret(crate::model::random::random_secret()),
                    email: None,
                },
                true,
            ),
        };
        let id = self
            .create_user(
                &Call::server(),
                NewUser {
                    username: Some(seed.username.clone()),
                    email: seed.email.clone(),
                    password_digest: Some(secrets::password_digest(&seed.password.0)),
                    name: Some(seed.username.clone()),
                    roles: vec!["admin".into(), "user".into()],
                },
            )
            .await?;
        if generated {
            // Written once, on the first start only: the one way to learn it.
            tracing::warn!(username = %seed.username, password = %seed.password.0, "no ADMIN_USERNAME/ADMIN_PASS: created an administrator with this generated password (shown only now)");
        } else {
            tracing::info!(username = %seed.username, user_id = %id, "created the administrator");
        }
        Ok(())
    }
}

/// Rocket.Chat's default `UTF8_User_Names_Validation`: letters, digits, `-`, `_`, `.`.
pub fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Names no user may take: the mentions of a whole room (`@all`, `@here`) and the name the
/// server's own notices go out under.
pub const RESERVED_USERNAMES: &[&str] = &["all", "here", "rocket.cat"];

/// Whether `name` is one of [`RESERVED_USERNAMES`], ignoring case.
pub fn reserved_username(name: &str) -> bool {
    RESERVED_USERNAMES
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
}

fn username_reserved() -> ServiceError {
    ServiceError::Client(MeteorError::new(
        "error-field-unavailable",
        "This username is reserved",
    ))
}

/// An address with one `@`, something on each side, and no spaces.
pub fn valid_email(address: &str) -> bool {
    address.len() <= 254
        && !address.contains(char::is_whitespace)
        && address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        })
}
