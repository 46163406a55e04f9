//! JSON request bodies are objects.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

/// Deserialises `T` from a JSON object only. serde's derived `Deserialize` for a struct also
/// accepts an array of its fields in order (`["ann@example.com", "…"]` for `{email, password}`),
/// which no client means and no API description allows; behind this, an array (or any other
/// non-object) is a wrong type, with serde's usual message and path.
pub struct ObjectOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer.deserialize_map(Object(PhantomData)).map(ObjectOnly)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::ObjectOnly;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Login {
        email: String,
        #[serde(default)]
        remember: Option<bool>,
    }

    #[test]
    fn only_objects() {
        let ok: ObjectOnly<Login> = serde_json::from_str(r#"{"email": "a@b.co"}"#).unwrap();
        assert_eq!(ok.0, Login { email: "a@b.co".into(), remember: None });
        for bad in [r#"["a@b.co", true]"#, "[]", r#""a@b.co""#, "null", "1"] {
            let e = serde_json::from_str::<ObjectOnly<Login>>(bad).err().unwrap();
            assert!(e.to_string().contains("expected a JSON object"), "{bad}: {e}");
        }
        let e = serde_json::from_str::<ObjectOnly<Login>>(r#"{"email": "a@b.co", "x": 1}"#).err().unwrap();
        assert!(e.to_string().contains("unknown field `x`"), "{e}");
        let e = serde_json::from_str::<ObjectOnly<Login>>(r#"{"email": 5}"#).err().unwrap();
        assert!(e.to_string().contains("invalid type: integer `5`"), "{e}");
        assert!(serde_json::from_str::<ObjectOnly<Login>>(r#"{"email": "a"} x"#).is_err());
    }
}
