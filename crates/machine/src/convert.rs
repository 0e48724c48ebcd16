//! Conversions between protobuf `Struct`/`Value` and JSON objects, which the resource traits
//! use for DoCommand, status, readings and `extra`.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value as PbValue};
use serde_json::{Number, Value};

use crate::resource::Object;

/// A protobuf Struct (absent = empty) as a JSON object.
pub fn struct_to_object(s: Option<Struct>) -> Object {
    s.map(|s| {
        s.fields
            .into_iter()
            .map(|(k, v)| (k, pb_to_json(v)))
            .collect()
    })
    .unwrap_or_default()
}

/// A JSON object as a protobuf Struct.
pub fn object_to_struct(o: Object) -> Struct {
    Struct {
        fields: o.into_iter().map(|(k, v)| (k, json_to_pb(v))).collect(),
    }
}

/// A protobuf Value as JSON. Non-finite numbers, which JSON cannot hold, become null.
pub fn pb_to_json(v: PbValue) -> Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => Number::from_f64(n).map_or(Value::Null, Value::Number),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_object(Some(s))),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(pb_to_json).collect()),
    }
}

/// JSON as a protobuf Value (numbers become doubles, as in google.protobuf.Value).
pub fn json_to_pb(v: Value) -> PbValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.into_iter().map(json_to_pb).collect(),
        }),
        Value::Object(o) => Kind::StructValue(object_to_struct(o)),
    };
    PbValue { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let Value::Object(o) = json!({"a": 1.5, "b": [true, null, "x"], "c": {"d": -2.0}}) else {
            unreachable!()
        };
        assert_eq!(struct_to_object(Some(object_to_struct(o.clone()))), o);
        assert_eq!(struct_to_object(None), Object::new());
    }
}
