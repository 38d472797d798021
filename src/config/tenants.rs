//! Tenants: the Atlassian organizations and sites one deployment serves, and what binds each
//! incoming event to exactly one of them.
//!
//! A tenant is a `[[tenants]]` entry; a config with the older single `[atlassian]` section has
//! one tenant, `default`, and a config with neither has an empty `default` tenant (nothing to
//! call, so nothing acts). Every event carries its tenant from a binding gatehouse controls,
//! never from the body: a source serves one tenant (`[[sources]] tenant`), a Connect
//! installation belongs to the tenant whose site it is ([`Settings::bind_site`]), a poller to
//! the tenant it polls.

use std::collections::HashMap;

use super::atlassian::DEFAULT_TENANT;
use super::{AtlassianSettings, ConfigError, ConfigWarning, Settings, SourceSettings};

/// What a Connect installation says about its site (from the signed lifecycle payload).
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    pub base_url: &'a str,
    pub cloud_id: Option<&'a str>,
    pub client_key: &'a str,
}

impl Settings {
    /// Every configured tenant with the config key its settings are under (`tenants[1]`, or
    /// `atlassian` for the legacy section).
    pub fn tenant_configs(&self) -> Vec<(String, &AtlassianSettings)> {
        if self.tenants.is_empty() {
            return self
                .atlassian
                .iter()
                .map(|a| ("atlassian".to_owned(), a))
                .collect();
        }
        self.tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("tenants[{i}]"), t))
            .collect()
    }

    /// The names of the tenants this deployment serves: at least one (`default` when nothing
    /// is configured).
    pub fn tenant_names(&self) -> Vec<String> {
        let names: Vec<String> = self
            .tenant_configs()
            .iter()
            .map(|(_, t)| t.tenant_name())
            .collect();
        if names.is_empty() {
            vec![DEFAULT_TENANT.to_owned()]
        } else {
            names
        }
    }

    /// The settings of tenant `name`, if it is configured with any.
    pub fn tenant(&self, name: &str) -> Option<&AtlassianSettings> {
        self.tenant_configs()
            .into_iter()
            .map(|(_, t)| t)
            .find(|t| t.tenant_name() == name)
    }

    /// Whether `name` is a tenant of this deployment.
    pub fn has_tenant(&self, name: &str) -> bool {
        self.tenant_names().iter().any(|t| t == name)
    }

    /// The tenant `source`'s events belong to: its `tenant`, or the only one there is
    /// (validation makes sure one of the two holds).
    pub fn source_tenant(&self, source: &SourceSettings) -> String {
        // On every delivery: the only tenant's name without listing them all.
        source.tenant.clone().unwrap_or_else(|| {
            self.tenants
                .first()
                .or(self.atlassian.as_ref())
                .map_or_else(|| DEFAULT_TENANT.to_owned(), AtlassianSettings::tenant_name)
        })
    }

    /// The tenant a command works on: `requested` if it is one, else the only tenant; an error
    /// listing them when there are several and none was named.
    pub fn choose_tenant(&self, requested: Option<&str>) -> Result<String, String> {
        let names = self.tenant_names();
        match requested {
            Some(name) if names.iter().any(|t| t == name) => Ok(name.to_owned()),
            Some(name) => Err(format!("no tenant `{name}` (have: {})", names.join(", "))),
            None if names.len() == 1 => Ok(names[0].clone()),
            None => Err(format!(
                "several tenants are configured; name one with --tenant ({})",
                names.join(", ")
            )),
        }
    }

    /// The tenant a Connect installation from `site` belongs to: the one whose site host (from
    /// `confluence_base_url`) or cloud id the install names, and whose `cloud_id` and
    /// `connect_client_key`, where configured, it matches too. The error says why no tenant
    /// takes it (any Atlassian site can install a public descriptor: only configured sites
    /// may).
    pub fn bind_site(&self, site: Site<'_>) -> Result<String, String> {
        let host = url::Url::parse(site.base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        let candidates: Vec<&AtlassianSettings> = self
            .tenant_configs()
            .into_iter()
            .map(|(_, t)| t)
            .filter(|t| {
                let by_host = host.is_some() && t.site_host() == host;
                let by_cloud_id = site.cloud_id.is_some() && t.site_cloud_id() == site.cloud_id;
                by_host || by_cloud_id
            })
            .collect();
        let site_name = host.as_deref().unwrap_or(site.base_url);
        let tenant = match candidates.as_slice() {
            [] => {
                return Err(format!(
                    "site {site_name} (cloud id {}) is not a configured tenant",
                    site.cloud_id.unwrap_or("not given")
                ));
            }
            [tenant] => tenant,
            _ => return Err(format!("site {site_name} matches several tenants")),
        };
        if let Some(expected) = tenant.site_cloud_id()
            && site.cloud_id != Some(expected)
        {
            return Err(format!(
                "site {site_name} gave cloud id {}, but tenant `{}` is cloud id {expected}",
                site.cloud_id.unwrap_or("none"),
                tenant.tenant_name()
            ));
        }
        if let Some(expected) = &tenant.connect_client_key
            && site.client_key != expected
        {
            return Err(format!(
                "site {site_name} installed as client key {}, but tenant `{}` accepts only {expected}",
                site.client_key,
                tenant.tenant_name()
            ));
        }
        Ok(tenant.tenant_name())
    }

    /// A note for `check-config` on how the tenants were read, if there is something to say.
    pub fn tenant_note(&self) -> Option<String> {
        (self.tenants.is_empty() && self.atlassian.is_some()).then(|| {
            format!(
                "[atlassian] is read as one tenant named `{}`; to serve several, move it to a \
                 [[tenants]] entry with that name (see docs/tenants.md)",
                self.tenant_names()[0]
            )
        })
    }
}

/// Checks the tenants and everything that names one (sources, policies).
pub(super) fn validate(
    settings: &Settings,
    now: chrono::DateTime<chrono::Utc>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigWarning>,
) {
    let mut error = |key: String, message: String| errors.push(ConfigError { key, message });
    let mut warn = |key: String, message: String| warnings.push(ConfigWarning { key, message });
    if settings.atlassian.is_some() && !settings.tenants.is_empty() {
        error(
            "atlassian".into(),
            "use either [atlassian] (one tenant) or [[tenants]], not both: move it into [[tenants]]".into(),
        );
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut hosts: HashMap<String, String> = HashMap::new();
    let mut cloud_ids: HashMap<String, String> = HashMap::new();
    for (key, tenant) in settings.tenant_configs() {
        super::atlassian::validate(&key, tenant, now, &mut error, &mut warn);
        let name = match (&tenant.name, key.as_str()) {
            (None, "atlassian") => DEFAULT_TENANT.to_owned(),
            (None, _) => {
                error(format!("{key}.name"), "required: every tenant has a name".into());
                continue;
            }
            (Some(name), _) => name.clone(),
        };
        if !super::checks::is_name(&name, &['-', '_']) {
            error(
                format!("{key}.name"),
                format!("`{name}` must be lowercase letters, digits, `-` and `_`"),
            );
        }
        if names.insert(name.clone(), 0).is_some() {
            error(
                format!("{key}.name"),
                format!("`{name}` names another tenant too"),
            );
        }
        // One site, one tenant: otherwise an install or an event could not say whose it is.
        if let Some(host) = tenant.site_host()
            && let Some(other) = hosts.insert(host.clone(), name.clone())
        {
            error(
                format!("{key}.confluence_base_url"),
                format!("site {host} is tenant `{other}` already"),
            );
        }
        if let Some(cloud_id) = tenant.site_cloud_id()
            && let Some(other) = cloud_ids.insert(cloud_id.to_owned(), name.clone())
        {
            error(
                format!("{key}.cloud_id"),
                format!("cloud id {cloud_id} is tenant `{other}` already"),
            );
        }
    }
    // Two tenants of one organization (a sandbox site beside production) both poll its one
    // events-stream: twice the requests against its limit, and every org event acted on in
    // both tenants. Sometimes meant (a leaver leaves both sites), so a warning.
    if settings.poll.org_events {
        let mut orgs: HashMap<&str, String> = HashMap::new();
        for (key, tenant) in settings.tenant_configs() {
            let Some(org_id) = tenant.org_id.as_deref().filter(|_| tenant.polls_org_events()) else {
                continue;
            };
            if let Some(other) = orgs.insert(org_id, tenant.tenant_name()) {
                warn(
                    format!("{key}.org_id"),
                    format!(
                        "organization {org_id} is tenant `{other}`'s too: both poll its events-stream \
                         (twice the requests against its limit of [poll] requests_per_window) and act \
                         on each of its events; give one tenant no admin_api_key if only one should"
                    ),
                );
            }
        }
    }
    let tenant_names = settings.tenant_names();
    let several = tenant_names.len() > 1;
    let sites = settings
        .tenant_configs()
        .iter()
        .any(|(_, t)| t.site_host().is_some() || t.site_cloud_id().is_some());
    if !sites
        && let Some(i) = settings
            .sources
            .iter()
            .position(|s| s.scheme == super::VerificationScheme::ConnectJwt)
    {
        warn(
            format!("sources[{i}].scheme"),
            "no tenant names a site (confluence_base_url or cloud_id): every Connect install will be refused (403) and every Connect webhook with it".into(),
        );
    }
    for (i, source) in settings.sources.iter().enumerate() {
        match &source.tenant {
            Some(name) if !tenant_names.contains(name) => error(
                format!("sources[{i}].tenant"),
                format!("`{name}` is not a tenant (have: {})", tenant_names.join(", ")),
            ),
            None if several && source.scheme != super::VerificationScheme::ConnectJwt => error(
                format!("sources[{i}].tenant"),
                format!(
                    "required with several tenants: name the one this source serves ({})",
                    tenant_names.join(", ")
                ),
            ),
            _ => {}
        }
    }
    for (i, policy) in settings.policies.iter().enumerate() {
        for (j, name) in policy.tenants.iter().enumerate() {
            if !tenant_names.contains(name) {
                error(
                    format!("policies[{i}].tenants[{j}]"),
                    format!("`{name}` is not a tenant (have: {})", tenant_names.join(", ")),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigErrors;

    fn load(text: &str) -> Result<(Settings, Vec<ConfigWarning>), ConfigErrors> {
        Settings::from_toml(text, std::iter::empty())
    }

    fn error_keys(text: &str) -> Vec<String> {
        load(text).unwrap_err().0.into_iter().map(|e| e.key).collect()
    }

    const TWO: &str = r#"
        [[tenants]]
        name = "prod"
        confluence_base_url = "https://acme.atlassian.net/wiki"
        cloud_id = "cloud-prod"
        auth = { kind = "basic", email = "bot@acme.com", token = "env:PATH" }
        [[tenants]]
        name = "sandbox"
        cloud_id = "cloud-sandbox"
        connect_client_key = "confluence:sandbox-key"
    "#;

    fn site<'a>(base_url: &'a str, cloud_id: Option<&'a str>, client_key: &'a str) -> Site<'a> {
        Site {
            base_url,
            cloud_id,
            client_key,
        }
    }

    #[test]
    fn two_tenants_polling_one_organization_are_warned_about() {
        let text = r#"
            [poll]
            org_events = true
            [[tenants]]
            name = "prod"
            cloud_id = "cloud-prod"
            org_id = "org-1"
            admin_api_key = "env:PATH"
            [[tenants]]
            name = "sandbox"
            cloud_id = "cloud-sandbox"
            org_id = "org-1"
            admin_api_key = "env:PATH"
        "#;
        let (_, warnings) = load(text).unwrap();
        let shared: Vec<&ConfigWarning> = warnings.iter().filter(|w| w.key == "tenants[1].org_id").collect();
        assert_eq!(shared.len(), 1, "{warnings:?}");
        assert!(
            shared[0].message.contains("tenant `prod`'s too"),
            "{}",
            shared[0].message
        );
        // One of them not polling: nothing to warn about.
        let (_, warnings) = load(&text.replacen("admin_api_key = \"env:PATH\"", "", 1)).unwrap();
        assert!(
            warnings.iter().all(|w| !w.key.ends_with("org_id")),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_legacy_section_is_the_tenant_default_and_nothing_configured_is_too() {
        let (settings, _) = load("[atlassian]\norg_id = \"o\"").unwrap();
        assert_eq!(settings.tenant_names(), ["default"]);
        assert!(settings.tenant_note().is_some());
        let (settings, _) = load("").unwrap();
        assert_eq!(settings.tenant_names(), ["default"]);
        assert!(settings.tenant("default").is_none());
        assert_eq!(settings.choose_tenant(None).unwrap(), "default");
    }

    #[test]
    fn installs_bind_to_the_tenant_whose_site_they_are() {
        let (settings, _) = load(TWO).unwrap();
        assert_eq!(settings.tenant_names(), ["prod", "sandbox"]);
        let prod = site("https://ACME.atlassian.net/wiki", Some("cloud-prod"), "k");
        assert_eq!(settings.bind_site(prod).unwrap(), "prod");
        // By cloud id alone (an OAuth tenant names no site URL), with its client key.
        let sandbox = site(
            "https://play.atlassian.net",
            Some("cloud-sandbox"),
            "confluence:sandbox-key",
        );
        assert_eq!(settings.bind_site(sandbox).unwrap(), "sandbox");
        let other_key = site(
            "https://play.atlassian.net",
            Some("cloud-sandbox"),
            "confluence:other",
        );
        assert!(
            settings
                .bind_site(other_key)
                .unwrap_err()
                .contains("accepts only")
        );
        // The right host claiming another cloud id is not the tenant's site.
        let wrong_cloud = site("https://acme.atlassian.net/wiki", Some("cloud-x"), "k");
        assert!(settings.bind_site(wrong_cloud).unwrap_err().contains("cloud id"));
        let missing_cloud = site("https://acme.atlassian.net/wiki", None, "k");
        assert!(settings.bind_site(missing_cloud).is_err());
        let stranger = site("https://evil.atlassian.net/wiki", Some("cloud-evil"), "k");
        assert!(
            settings
                .bind_site(stranger)
                .unwrap_err()
                .contains("not a configured tenant")
        );
        assert!(settings.bind_site(site("not a url", None, "k")).is_err());
    }

    #[test]
    fn commands_name_their_tenant_when_there_are_several() {
        let (settings, _) = load(TWO).unwrap();
        let error = settings.choose_tenant(None).unwrap_err();
        assert!(error.contains("prod, sandbox"), "{error}");
        assert_eq!(settings.choose_tenant(Some("sandbox")).unwrap(), "sandbox");
        assert!(
            settings
                .choose_tenant(Some("staging"))
                .unwrap_err()
                .contains("no tenant")
        );
    }

    #[test]
    fn tenants_and_what_names_them_are_checked() {
        let keys = error_keys(&format!("{TWO}\n[atlassian]\norg_id = \"o\""));
        assert!(keys.contains(&"atlassian".to_owned()), "{keys:?}");
        let keys = error_keys("[[tenants]]\ncloud_id = \"c\"");
        assert_eq!(keys, ["tenants[0].name"]);
        let keys = error_keys(
            "[[tenants]]\nname = \"a\"\ncloud_id = \"c\"\n[[tenants]]\nname = \"a\"\ncloud_id = \"c\"",
        );
        assert!(keys.contains(&"tenants[1].name".to_owned()), "{keys:?}");
        assert!(keys.contains(&"tenants[1].cloud_id".to_owned()), "{keys:?}");
        let keys = error_keys("[[tenants]]\nname = \"Prod!\"");
        assert_eq!(keys, ["tenants[0].name"]);
        // Every key of a tenant names the tenant's table.
        let keys = error_keys("[[tenants]]\nname = \"a\"\nscim_token = \"env:PATH\"");
        assert_eq!(keys, ["tenants[0].scim_base_url"]);
        // With several tenants a source must say whose it is, and name one that exists.
        let text = format!(
            "{TWO}\n[[sources]]\nname = \"hr\"\nscheme = \"url-token\"\n[[sources]]\nname = \"hr2\"\nscheme = \"url-token\"\ntenant = \"staging\"\n[[sources]]\nname = \"hr3\"\nscheme = \"url-token\"\ntenant = \"prod\""
        );
        let keys = error_keys(&text);
        assert!(keys.contains(&"sources[0].tenant".to_owned()), "{keys:?}");
        assert!(keys.contains(&"sources[1].tenant".to_owned()), "{keys:?}");
        assert!(!keys.contains(&"sources[2].tenant".to_owned()), "{keys:?}");
        // A policy's tenants must exist, and have what its actions need.
        let text = format!(
            "{TWO}\n[[policies]]\non = \"user.deactivated\"\nactions = [\"confluence.remove_from_all_groups\"]\ntenants = [\"prod\", \"staging\"]"
        );
        let errors = load(&text).unwrap_err();
        let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["policies[0].tenants[1]"], "{errors}");
        // Acting for every tenant, it needs sandbox's auth too.
        let text = format!(
            "{TWO}\n[[policies]]\non = \"user.deactivated\"\nactions = [\"confluence.remove_from_all_groups\"]"
        );
        let errors = load(&text).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert!(errors.0[0].message.contains("tenants[1].auth"), "{errors}");
    }
}
