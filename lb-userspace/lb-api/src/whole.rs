//! Integers of request bodies as JSON Schema reads them: `80` and `80.0` are the same
//! integer there (a generated client or a fuzzer may send either), so both are accepted;
//! `80.5`, negatives and values beyond the field's type are refused.

use serde::{Deserialize, Deserializer, de::Error};

/// A whole number that fits `T`.
pub fn number<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let n = serde_json::Number::deserialize(d)?;
    let whole = match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => Some(u),
        // Exact below 2^53; larger floats are out of every field's range anyway.
        (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f < 9_007_199_254_740_992.0 => {
            Some(f as u64)
        }
        _ => None,
    };
    whole
        .and_then(|u| T::try_from(u).ok())
        .ok_or_else(|| D::Error::custom(format!("{n} is not a whole number in range")))
}

/// [`number`], or `null`.
pub fn optional<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    #[derive(Deserialize)]
    struct Whole<T: TryFrom<u64>>(#[serde(deserialize_with = "number")] T);
    Ok(Option::<Whole<T>>::deserialize(d)?.map(|w| w.0))
}

/// An object, or `null`: serde would also read a struct from a JSON array (`[]` as every field
/// left out), which the schema does not allow.
pub fn optional_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    match Option::<serde_json::Value>::deserialize(d)? {
        None => Ok(None),
        Some(v @ serde_json::Value::Object(_)) => {
            T::deserialize(v).map(Some).map_err(D::Error::custom)
        }
        Some(other) => Err(D::Error::custom(format!(
            "expected an object, found {other}"
        ))),
    }
}
