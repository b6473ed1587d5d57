//! A plugin's config arrives as JSON text on every call; a subscription's is
//! the same text each time, so it is parsed once and the parsed value kept
//! (a reused instance keeps it across calls).

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::rc::Rc;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// The config of a plugin that takes none: empty text or `{}`; any field is
/// refused, so a typo in the operator's config does not pass silently.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// Parsed configs by type and text: a plugin sees a handful of distinct
/// texts (one per subscription using it), so a short list is enough.
type Cache = Vec<(TypeId, String, Rc<dyn Any>)>;

/// At most this many parsed configs are kept; the oldest goes first.
const KEPT: usize = 16;

thread_local! {
    static PARSED: RefCell<Cache> = const { RefCell::new(Vec::new()) };
}

/// `text` parsed as `C`, from the cache when seen before. Blank text is
/// `C::default()`.
pub(crate) fn parsed<C: DeserializeOwned + Default + 'static>(text: &str) -> Result<Rc<C>> {
    let type_id = TypeId::of::<C>();
    let hit = PARSED.with(|cache| {
        cache
            .borrow()
            .iter()
            .find(|(t, kept, _)| *t == type_id && kept == text)
            .map(|(_, _, value)| value.clone())
    });
    if let Some(value) = hit
        && let Ok(config) = value.downcast::<C>()
    {
        return Ok(config);
    }
    let config: Rc<C> = Rc::new(if text.trim().is_empty() {
        C::default()
    } else {
        serde_json::from_str(text).map_err(|e| Error::new(format!("config: {e}")))?
    });
    PARSED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() == KEPT {
            cache.remove(0);
        }
        cache.push((type_id, text.to_string(), config.clone()));
    });
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Default, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Limits {
        max: Option<u32>,
    }

    #[test]
    fn blank_text_is_the_default_and_a_text_is_parsed_once() {
        assert_eq!(*parsed::<Limits>("  ").unwrap(), Limits::default());
        let first = parsed::<Limits>(r#"{"max": 3}"#).unwrap();
        let again = parsed::<Limits>(r#"{"max": 3}"#).unwrap();
        assert_eq!(first.max, Some(3));
        assert!(Rc::ptr_eq(&first, &again), "the second call parsed again");
    }

    #[test]
    fn a_bad_config_names_the_problem() {
        let error = parsed::<Limits>(r#"{"maks": 3}"#).unwrap_err();
        assert!(
            error.message().starts_with("config: unknown field `maks`"),
            "{error}"
        );
        assert!(parsed::<NoConfig>("{}").is_ok());
        assert!(parsed::<NoConfig>(r#"{"x": 1}"#).is_err());
    }
}
