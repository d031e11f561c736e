//! Adjustments of the schemas that `kube`'s derive generates, so that the CRDs we install validate like
//! the official ones.
//!
//! - `nullable: true` is removed everywhere: the official schemas never set it, so the API server prunes
//!   `null` values instead of storing them.
//! - Quantities (`x-kubernetes-int-or-string: true`) get the official `anyOf: [integer, string]` and the
//!   quantity `pattern`, so malformed quantities are rejected at admission instead of breaking readers;
//!   the long generic description of `Quantity` is dropped.
//! - The `metav1.Condition` list of the ClusterProfile status is written by hand
//!   ([`conditions_schema`]), with the validation Kubernetes declares for that type.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use schemars::{Schema, SchemaGenerator, json_schema};

/// Regular expression every Kubernetes resource quantity matches (as declared for `resource.Quantity`).
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// Start of the generic description k8s-openapi gives every `Quantity`.
const QUANTITY_DESCRIPTION_PREFIX: &str = "Quantity is a fixed-point representation";

/// Applies the adjustments described in the module documentation to `schema` and everything below it.
pub(crate) fn normalize(schema: &mut JSONSchemaProps) {
    schema.nullable = None;
    if schema.x_kubernetes_int_or_string == Some(true) {
        schema.type_ = None;
        schema.any_of = Some(vec![typed("integer"), typed("string")]);
        schema.pattern = Some(QUANTITY_PATTERN.to_owned());
        if schema
            .description
            .as_deref()
            .is_some_and(|d| d.starts_with(QUANTITY_DESCRIPTION_PREFIX))
        {
            schema.description = None;
        }
        // The anyOf branches above are final; nothing below needs normalizing.
        return;
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        normalize(child);
    }
    match &mut schema.items {
        Some(JSONSchemaPropsOrArray::Schema(s)) => normalize(s),
        Some(JSONSchemaPropsOrArray::Schemas(v)) => v.iter_mut().for_each(normalize),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(s)) = &mut schema.additional_properties {
        normalize(s);
    }
    for list in [&mut schema.any_of, &mut schema.all_of, &mut schema.one_of] {
        list.iter_mut().flatten().for_each(normalize);
    }
    if let Some(not) = &mut schema.not {
        normalize(not);
    }
}

/// Declares `apiVersion`, `kind` and `metadata` at the root of a custom resource schema, as the official
/// CRDs do, and drops the `title` the derive sets there.
pub(crate) fn add_object_root_properties(root: &mut JSONSchemaProps) {
    root.title = None;
    let properties = root.properties.get_or_insert_with(Default::default);
    for (name, type_, description) in [
        (
            "apiVersion",
            "string",
            "Versioned schema of this representation of the object.",
        ),
        ("kind", "string", "REST resource this object represents."),
        ("metadata", "object", ""),
    ] {
        properties
            .entry(name.to_owned())
            .or_insert_with(|| JSONSchemaProps {
                description: (!description.is_empty()).then(|| description.to_owned()),
                ..typed(type_)
            });
    }
}

fn typed(type_: &str) -> JSONSchemaProps {
    JSONSchemaProps {
        type_: Some(type_.to_owned()),
        ..JSONSchemaProps::default()
    }
}

/// Schema of a list of standard `metav1.Condition`s keyed by `type`, with the validation Kubernetes
/// declares for that type (used by the ClusterProfile status).
pub(crate) fn conditions_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Conditions of the profile (standard metav1.Condition, at most one per type).",
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "description": "One aspect of the current state of the profile.",
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {
                    "description": "Last time the status changed.",
                    "type": "string",
                    "format": "date-time"
                },
                "message": {
                    "description": "Human-readable details; may be empty.",
                    "type": "string",
                    "maxLength": 32768
                },
                "observedGeneration": {
                    "description": "metadata.generation the condition was computed from.",
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0
                },
                "reason": {
                    "description": "CamelCase machine-readable reason of the last transition.",
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
                },
                "status": {
                    "description": "True, False or Unknown.",
                    "type": "string",
                    "enum": ["True", "False", "Unknown"]
                },
                "type": {
                    "description": "Condition type, CamelCase or foo.example.com/CamelCase.",
                    "type": "string",
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
                }
            }
        }
    })
}
