//! Event catalogs: the event types a provider publishes, each with its
//! description, availability tier, delivery mode and a sample payload.
//!
//! A catalog is a JSON file (`examples/*/catalog.json`):
//! `{"name", "description", "event_types": [{"name", "description", "tier",
//! "delivery", "upcoming", "sample", ...}]}`. Catalogs drive three things:
//! the tier check (a `public` subscription never receives a `partner` type),
//! the delivery mode of a type (under `[aggregation.types]`), and, with
//! `catalog.strict`, which types ingest accepts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Mode, OPERATIONAL_PREFIX, Tier};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub event_types: Vec<EventType>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventType {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tier: Tier,
    /// `"direct"` or an aggregation interval (`"5m"`). Unset: direct unless
    /// configured otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub delivery: Option<DeliveryText>,
    /// Announced by the provider but not live: listed, not accepted when strict.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upcoming: bool,
    /// Fields a receiver usually looks at first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_fields: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// A sample `data` payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<Value>,
}

/// A delivery mode as written in the catalog; kept as text for listings.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct DeliveryText {
    pub text: String,
    #[serde(skip)]
    pub mode: Mode,
}

impl<'de> Deserialize<'de> for DeliveryText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let mode = Mode::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&text))?;
        Ok(DeliveryText { text, mode })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: line {line}, column {column}: {message}")]
    Invalid {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: event type {name:?} is also in catalog {other:?}")]
    Duplicate {
        file: PathBuf,
        name: String,
        other: String,
    },
    #[error("{file}: an event type has an empty name")]
    EmptyName { file: PathBuf },
}

/// Every loaded catalog, and an index of types by name.
#[derive(Debug, Clone, Default)]
pub struct Catalogs {
    pub catalogs: Vec<Catalog>,
    /// Type name → (catalog index, type index).
    index: BTreeMap<String, (usize, usize)>,
}

impl Catalogs {
    pub fn load(files: &[PathBuf]) -> Result<Catalogs, CatalogError> {
        let mut all = Catalogs::default();
        for file in files {
            all.add(file, load_one(file)?)?;
        }
        Ok(all)
    }

    fn add(&mut self, file: &Path, catalog: Catalog) -> Result<(), CatalogError> {
        let c = self.catalogs.len();
        for (t, event_type) in catalog.event_types.iter().enumerate() {
            if event_type.name.is_empty() {
                return Err(CatalogError::EmptyName { file: file.into() });
            }
            if let Some(&(other, _)) = self.index.get(&event_type.name) {
                let other = if other == c {
                    catalog.name.clone()
                } else {
                    self.catalogs[other].name.clone()
                };
                return Err(CatalogError::Duplicate {
                    file: file.into(),
                    name: event_type.name.clone(),
                    other,
                });
            }
            self.index.insert(event_type.name.clone(), (c, t));
        }
        self.catalogs.push(catalog);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.catalogs.is_empty()
    }

    /// The catalog entry of `name`, with its catalog's name.
    pub fn get(&self, name: &str) -> Option<(&str, &EventType)> {
        self.index.get(name).map(|&(c, t)| {
            let catalog = &self.catalogs[c];
            (catalog.name.as_str(), &catalog.event_types[t])
        })
    }

    /// A type's tier; types in no catalog are public.
    pub fn tier(&self, name: &str) -> Tier {
        self.get(name).map_or(Tier::Public, |(_, t)| t.tier)
    }

    /// Whether a subscription of `tier` may receive `event_type`.
    pub fn allows(&self, tier: Tier, event_type: &str) -> bool {
        // hookhost's operational events are partner types, catalog or not.
        tier == Tier::Partner
            || (!event_type.starts_with(OPERATIONAL_PREFIX)
                && self.tier(event_type) == Tier::Public)
    }

    /// Adds a catalog that comes with hookhost (its operational events).
    pub fn add_built_in(&mut self, catalog: Catalog) -> Result<(), CatalogError> {
        self.add(Path::new("(built in)"), catalog)
    }

    /// Every type, in catalog order.
    pub fn types(&self) -> impl Iterator<Item = (&str, &EventType)> {
        self.catalogs
            .iter()
            .flat_map(|c| c.event_types.iter().map(move |t| (c.name.as_str(), t)))
    }
}

fn load_one(file: &Path) -> Result<Catalog, CatalogError> {
    let text = std::fs::read_to_string(file).map_err(|source| CatalogError::Read {
        file: file.into(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| CatalogError::Invalid {
        file: file.into(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Catalog {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(name)
            .join("catalog.json");
        load_one(&file).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn shipped_catalogs_hold_every_type_of_their_seed() {
        let bikeep = shipped("bikeep");
        let names: Vec<&str> = bikeep.event_types.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "connection",
                "connection_confirmed",
                "alarm",
                "parking_reminder",
                "status",
                "report",
                "maintenance_log"
            ]
        );
        assert!(bikeep.event_types.iter().all(|t| t.sample.is_some()));
        let partner: Vec<&str> = bikeep
            .event_types
            .iter()
            .filter(|t| t.tier == Tier::Partner)
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(partner, ["status", "report", "maintenance_log"]);

        let billabear = shipped("billabear");
        assert_eq!(billabear.event_types.len(), 20);
        assert!(billabear.event_types.iter().all(|t| t.sample.is_some()));

        let biamo = shipped("biamo");
        let current = biamo.event_types.iter().filter(|t| !t.upcoming).count();
        let upcoming = biamo.event_types.iter().filter(|t| t.upcoming).count();
        assert_eq!((current, upcoming), (12, 39));
    }

    #[test]
    fn the_three_catalogs_load_together_and_index_by_name() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let all = Catalogs::load(&[
            root.join("bikeep/catalog.json"),
            root.join("billabear/catalog.json"),
            root.join("biamo/catalog.json"),
        ])
        .unwrap();
        assert_eq!(all.types().count(), 7 + 20 + 51);
        assert_eq!(all.get("alarm").unwrap().0, "bikeep");
        assert_eq!(all.tier("status"), Tier::Partner);
        assert_eq!(all.tier("unknown.type"), Tier::Public);
        assert!(!all.allows(Tier::Public, "report"));
        assert!(all.allows(Tier::Partner, "report"));
        assert!(all.allows(Tier::Public, "alarm"));
        let alarm = all.get("alarm").unwrap().1;
        assert_eq!(
            alarm.delivery.as_ref().unwrap().mode,
            Mode::Every(std::time::Duration::from_secs(60))
        );
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.json");
        std::fs::write(
            &file,
            "{\"name\": \"x\", \"event_types\": [\n{\"name\": \"a\", \"tier\": \"vip\"}]}",
        )
        .unwrap();
        let err = Catalogs::load(std::slice::from_ref(&file))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.json: line 2") && err.contains("vip"),
            "{err}"
        );
        std::fs::write(
            &file,
            "{\"name\": \"x\", \"event_types\": [{\"name\": \"a\"}, {\"name\": \"a\"}]}",
        )
        .unwrap();
        let err = Catalogs::load(&[file]).unwrap_err().to_string();
        assert!(err.contains("\"a\" is also in catalog \"x\""), "{err}");
    }
}
