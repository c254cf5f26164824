//! Administering plugins, for holders of `manage-apps` only: listing them, installing or
//! upgrading from a bundle, enabling, disabling, configuring and removing. Every change is
//! written to `comet_plugins` before it is acted on, so a restart of comet keeps it.

use super::bundle;
use super::manifest::Manifest;
use super::{invalid, no_plugin, not_allowed, Plugin, Plugins, State, PERMISSION, PLUGINS};
use crate::chat::call::Call;
use crate::engine::build::{selector, update};
use crate::engine::ServiceError;
use crate::model::Value;
use crate::storage::{RemoveOptions, UpdateOptions};
use serde_json::{json, Value as Json};
use std::sync::Arc;

impl Plugins {
    async fn require_admin(&self, call: &Call<'_>) -> Result<(), ServiceError> {
        let uid = call.require_user()?;
        if self.services.permissions.may(uid, PERMISSION, None).await? {
            Ok(())
        } else {
            Err(not_allowed())
        }
    }

    /// Every plugin, as administrators see it.
    pub async fn list(&self, call: &Call<'_>) -> Result<Vec<Json>, ServiceError> {
        self.require_admin(call).await?;
        Ok(self.views())
    }

    fn views(&self) -> Vec<Json> {
        self.all()
            .iter()
            .map(|p| p.view(self.is_enabled(&p.id)))
            .collect()
    }

    /// One plugin, as administrators see it.
    pub async fn get_view(&self, call: &Call<'_>, id: &str) -> Result<Json, ServiceError> {
        self.require_admin(call).await?;
        let plugin = self.get(id).ok_or_else(no_plugin)?;
        Ok(plugin.view(self.is_enabled(id)))
    }

    /// Installs (or upgrades) the plugin a `.tar.gz` bundle holds, and enables it.
    pub async fn install(&self, call: &Call<'_>, bytes: &[u8]) -> Result<Json, ServiceError> {
        self.require_admin(call).await?;
        let me = self.me()?;
        let plugin = me.install_bundle(bytes).await?;
        Ok(plugin.view(self.is_enabled(&plugin.id)))
    }

    /// This service as an `Arc` (it always lives in one).
    fn me(&self) -> Result<Arc<Self>, ServiceError> {
        self.this
            .upgrade()
            .ok_or_else(|| ServiceError::internal("plugins are shutting down"))
    }

    /// Unpacks a bundle, puts its folder in place of the plugin's old one (stopping it
    /// first), and starts it.
    pub(super) async fn install_bundle(
        self: &Arc<Self>,
        bytes: &[u8],
    ) -> Result<Arc<Plugin>, ServiceError> {
        let staging = self
            .config
            .dir
            .join(format!(".staging-{}", crate::model::random::random_id()));
        let outcome = self.install_from(&staging, bytes).await;
        let _ = std::fs::remove_dir_all(&staging);
        outcome
    }

    async fn install_from(
        self: &Arc<Self>,
        staging: &std::path::Path,
        bytes: &[u8],
    ) -> Result<Arc<Plugin>, ServiceError> {
        let unpacked = {
            let bytes = bytes.to_vec();
            let staging = staging.to_path_buf();
            tokio::task::spawn_blocking(move || bundle::unpack(&bytes, &staging))
                .await
                .map_err(|e| ServiceError::internal(e.to_string()))?
                .map_err(|e| invalid(e.0))?
        };
        let manifest = Manifest::read(&unpacked).map_err(|e| invalid(e.0))?;
        let target = self.config.dir.join(&manifest.id);
        let old = self
            .plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&manifest.id);
        if let Some(old) = &old {
            self.deactivate(old).await;
        }
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(|e| {
                ServiceError::internal(format!("cannot replace {}: {e}", target.display()))
            })?;
        }
        std::fs::rename(&unpacked, &target).map_err(|e| {
            ServiceError::internal(format!("cannot install {}: {e}", target.display()))
        })?;
        tracing::info!(plugin = %manifest.id, version = %manifest.version, upgrade = old.is_some(), "plugin installed");
        // An upgrade keeps the configuration; a plugin disabled by comet gets another chance.
        if let Some(old) = old {
            let config = old.config.read().unwrap_or_else(|p| p.into_inner()).clone();
            let plugin = Plugin::new(target, manifest, self.services.store.clone());
            *plugin.config.write().unwrap_or_else(|p| p.into_inner()) = config;
            self.persist(&plugin, true, None).await?;
            self.plugins
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(plugin.id.clone(), plugin.clone());
            self.activate(&plugin).await?;
            return Ok(plugin);
        }
        let id = manifest.id.clone();
        if let Some(doc) = self.stored(&id).await? {
            if doc.get("enabled") == Some(&Value::Bool(false)) {
                self.persist_enabled_only(&id).await?;
            }
        }
        self.register(target, manifest).await
    }

    async fn persist_enabled_only(&self, id: &str) -> Result<(), ServiceError> {
        self.services
            .store
            .update(
                PLUGINS,
                selector(json!({"_id": id}))?,
                update(json!({"$set": {"enabled": true, "reason": null}}))?,
                UpdateOptions::default(),
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        Ok(())
    }

    /// Enables a plugin (again); a plugin comet disabled gets a fresh start.
    pub async fn enable(&self, call: &Call<'_>, id: &str) -> Result<Json, ServiceError> {
        self.require_admin(call).await?;
        let me = self.me()?;
        let plugin = self.get(id).ok_or_else(no_plugin)?;
        if !self.is_enabled(id) {
            if let Err(err) = plugin.reload_manifest() {
                return Err(invalid(err.0));
            }
            plugin.set_state(State::Starting, None);
            self.persist(&plugin, true, None).await?;
            me.activate(&plugin).await?;
        }
        Ok(plugin.view(true))
    }

    /// Disables a plugin: `OnDeactivate`, then its process ends.
    pub async fn disable(&self, call: &Call<'_>, id: &str) -> Result<Json, ServiceError> {
        self.require_admin(call).await?;
        let plugin = self.get(id).ok_or_else(no_plugin)?;
        self.deactivate(&plugin).await;
        plugin.set_state(State::Disabled, None);
        self.persist(&plugin, false, None).await?;
        Ok(plugin.view(false))
    }

    /// Removes a plugin: stopped, its folder, state and keys gone (its bot user stays, as
    /// the author of its messages).
    pub async fn remove(&self, call: &Call<'_>, id: &str) -> Result<(), ServiceError> {
        self.require_admin(call).await?;
        let plugin = self.get(id).ok_or_else(no_plugin)?;
        self.deactivate(&plugin).await;
        self.plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Err(err) = std::fs::remove_dir_all(&plugin.dir) {
            tracing::warn!(plugin = %id, cause = %err, "plugin folder not removed");
        }
        plugin.kv.clear().await?;
        self.services
            .store
            .remove(
                PLUGINS,
                selector(json!({"_id": id}))?,
                RemoveOptions::default(),
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        tracing::info!(plugin = %id, "plugin removed");
        Ok(())
    }

    /// Sets configuration values (each a setting of the plugin's schema, of its type; a
    /// `null` goes back to the default) and tells a running plugin.
    pub async fn configure(
        &self,
        call: &Call<'_>,
        id: &str,
        values: &serde_json::Map<String, Json>,
    ) -> Result<Json, ServiceError> {
        self.require_admin(call).await?;
        let plugin = self.get(id).ok_or_else(no_plugin)?;
        let manifest = plugin.manifest();
        for (key, value) in values {
            let Some(setting) = manifest.settings.iter().find(|s| &s.key == key) else {
                return Err(invalid(format!("{id} has no setting {key}")));
            };
            let fits = match (setting.kind.as_str(), value) {
                (_, Json::Null) => true,
                ("bool", v) => v.is_boolean(),
                ("number", v) => v.is_number(),
                (_, Json::String(s)) => s.len() <= 64 * 1024,
                _ => false,
            };
            if !fits {
                return Err(invalid(format!("{key} must be a {}", setting.kind)));
            }
        }
        {
            let mut config = plugin.config.write().unwrap_or_else(|p| p.into_inner());
            for (key, value) in values {
                if value.is_null() {
                    config.remove(key);
                } else {
                    config.insert(key.clone(), value.clone());
                }
            }
        }
        let enabled = self.is_enabled(id);
        self.persist(
            &plugin,
            enabled,
            plugin.state().1.as_deref().filter(|_| !enabled),
        )
        .await?;
        if manifest.implements("OnConfigurationChange") {
            if let Some(peer) = plugin.peer() {
                let params = json!({"config": plugin.config()});
                if let Err(err) = peer
                    .call("OnConfigurationChange", params, manifest.hook_deadline)
                    .await
                {
                    tracing::warn!(plugin = %id, cause = %err, "OnConfigurationChange failed");
                }
            }
        }
        Ok(plugin.view(enabled))
    }
}
