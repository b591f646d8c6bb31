//! OpenAPI 3.1 document derived from the proto descriptors, so the REST schema cannot drift from
//! the wire types: component schemas follow the canonical proto3 JSON mapping (lowerCamelCase
//! names, 64-bit integers as strings, enums as their names, `Timestamp` as RFC 3339).

use std::collections::BTreeMap;

use prost::Message;
use prost_types::{
    DescriptorProto, FileDescriptorSet, field_descriptor_proto::Label, field_descriptor_proto::Type,
};
use serde_json::{Map, Value, json};

/// One REST route: the API module lists these, and the document is built from them.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Fully qualified request message (without leading dot), if the route takes a body.
    pub request: Option<&'static str>,
    /// Fully qualified response message; `None` for 204.
    pub response: Option<&'static str>,
    /// Query parameters (name, description).
    pub query: &'static [(&'static str, &'static str)],
}

fn schema_ref(full: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{}", full.trim_start_matches('.')) })
}

fn field_schema(f: &prost_types::FieldDescriptorProto) -> Value {
    let scalar = match f.r#type() {
        Type::Double | Type::Float => json!({"type": "number"}),
        Type::Int32 | Type::Sint32 | Type::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Type::Uint32 | Type::Fixed32 => json!({"type": "integer", "format": "int64", "minimum": 0}),
        Type::Int64 | Type::Sint64 | Type::Sfixed64 => json!({"type": "string", "format": "int64"}),
        Type::Uint64 | Type::Fixed64 => json!({"type": "string", "format": "uint64"}),
        Type::Bool => json!({"type": "boolean"}),
        Type::String => json!({"type": "string"}),
        Type::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Type::Enum => schema_ref(f.type_name()),
        Type::Message | Type::Group => {
            if f.type_name() == ".google.protobuf.Timestamp" {
                json!({"type": "string", "format": "date-time"})
            } else {
                schema_ref(f.type_name())
            }
        }
    };
    if f.label() == Label::Repeated {
        json!({"type": "array", "items": scalar})
    } else {
        scalar
    }
}

fn add_messages(prefix: &str, msgs: &[DescriptorProto], out: &mut BTreeMap<String, Value>) {
    for m in msgs {
        let name = format!("{prefix}.{}", m.name());
        let mut props = Map::new();
        for f in &m.field {
            props.insert(f.json_name().to_string(), field_schema(f));
        }
        let mut schema = json!({"type": "object", "properties": props});
        let oneofs: Vec<Value> = m
            .oneof_decl
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let members: Vec<&str> = m
                    .field
                    .iter()
                    .filter(|f| f.oneof_index == Some(i as i32) && !f.proto3_optional())
                    .map(|f| f.json_name())
                    .collect();
                json!({"oneof": o.name(), "members": members})
            })
            .collect();
        if !oneofs.is_empty() {
            schema["x-oneof"] = Value::Array(oneofs);
            schema["description"] =
                Value::String("At most one member of each x-oneof group is set.".into());
        }
        out.insert(name.trim_start_matches('.').to_string(), schema);
        add_messages(&name, &m.nested_type, out);
        for e in &m.enum_type {
            add_enum(&format!("{name}.{}", e.name()), e, out);
        }
    }
}

fn add_enum(full: &str, e: &prost_types::EnumDescriptorProto, out: &mut BTreeMap<String, Value>) {
    let names: Vec<&str> = e.value.iter().map(|v| v.name()).collect();
    out.insert(
        full.trim_start_matches('.').to_string(),
        json!({"type": "string", "enum": names}),
    );
}

/// The OpenAPI document for `routes`.
pub fn document(title: &str, version: &str, routes: &[Route]) -> Value {
    let fds = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap_or_default();
    let mut schemas = BTreeMap::new();
    for file in fds
        .file
        .iter()
        .filter(|f| f.package().starts_with("foureyes"))
    {
        let prefix = format!(".{}", file.package());
        add_messages(&prefix, &file.message_type, &mut schemas);
        for e in &file.enum_type {
            add_enum(&format!("{prefix}.{}", e.name()), e, &mut schemas);
        }
    }
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for r in routes {
        let mut op = Map::new();
        op.insert("summary".into(), r.summary.into());
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(r.query.iter().map(|(n, d)| {
            json!({"name": n, "in": "query", "required": false, "description": d, "schema": {"type": "string"}})
        }));
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(req) = r.request {
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": schema_ref(req)}}}),
            );
        }
        let mut responses = Map::new();
        match r.response {
            Some(resp) => {
                let code = if r.method == "post" && r.request.is_some() {
                    "201"
                } else {
                    "200"
                };
                responses.insert(
                    code.into(),
                    json!({"description": "OK", "content": {"application/json": {"schema": schema_ref(resp)}}}),
                );
            }
            None => {
                responses.insert("204".into(), json!({"description": "No content"}));
            }
        }
        for (code, what) in [
            ("400", "Bad request"),
            ("401", "Missing or invalid token"),
            ("404", "Not found (or another tenant's)"),
        ] {
            responses.insert(
                code.into(),
                json!({"description": what, "content": {"application/json": {"schema": schema_ref("foureyes.v1.ApiError")}}}),
            );
        }
        op.insert("responses".into(), Value::Object(responses));
        op.insert("security".into(), json!([{"bearer": []}]));
        paths
            .entry(r.path.to_string())
            .or_default()
            .insert(r.method.to_string(), Value::Object(op));
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_follow_the_canonical_json_mapping() {
        let doc = document("t", "0", &[]);
        let s = &doc["components"]["schemas"];
        let result = &s["foureyes.v1.ProbeResult"]["properties"];
        assert_eq!(result["seq"]["type"], "string", "uint64 is a JSON string");
        assert_eq!(result["sentAt"]["format"], "date-time");
        assert_eq!(result["testId"]["type"], "string");
        assert!(
            s["foureyes.v1.Status"]["enum"]
                .as_array()
                .is_some_and(|e| e.iter().any(|v| v == "STATUS_OK"))
        );
        assert!(s["foureyes.v1.ProbeConfig"]["x-oneof"].is_array());
    }
}
