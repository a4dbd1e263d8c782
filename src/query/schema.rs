//! `GET /api/v2/query/schema.json`: the JSON schema of the queries hush accepts,
//! generated from the same closed lists the parser matches against, so the two cannot
//! drift apart.

use serde_json::{Value, json};

use super::request::{
    EventDimension, MAX_CLAUSES, MAX_DIMENSIONS, MAX_FILTER_DEPTH, MAX_LIMIT, MAX_RANGE_DAYS,
    MAX_VALUE_BYTES, Metric, Op, PROP_PREFIX, TimeDimension, VisitDimension,
};

fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|v| name(*v)).collect()
}

/// The schema (draft 07), built anew on each call; cheap enough for a rare request.
pub fn schema() -> Value {
    let metrics = names(Metric::ALL, Metric::name);
    let mut dimensions = names(EventDimension::ALL, EventDimension::name);
    dimensions.extend(names(VisitDimension::ALL, VisitDimension::name));
    let times = names(TimeDimension::ALL, TimeDimension::name);
    let ops = names(Op::ALL, Op::name);
    let prop_pattern = format!("^{}.+", PROP_PREFIX.replace(':', "\\:"));
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "hush Stats API v2 query",
        "type": "object",
        "required": ["site_id", "metrics", "date_range"],
        "additionalProperties": false,
        "properties": {
            "site_id": {"type": "string", "minLength": 1, "maxLength": MAX_VALUE_BYTES},
            "metrics": {
                "type": "array", "minItems": 1, "uniqueItems": true,
                "items": {"enum": metrics}
            },
            "date_range": {"$ref": "#/definitions/date_range"},
            "dimensions": {
                "type": "array", "uniqueItems": true, "maxItems": MAX_DIMENSIONS,
                "items": {"$ref": "#/definitions/dimension"}
            },
            "filters": {"type": "array", "items": {"$ref": "#/definitions/filter"}},
            "order_by": {
                "type": "array",
                "items": {
                    "type": "array", "minItems": 2, "maxItems": 2,
                    "items": [
                        {"anyOf": [{"enum": metrics}, {"$ref": "#/definitions/dimension"}]},
                        {"enum": ["asc", "desc"]}
                    ]
                }
            },
            "include": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "time_labels": {"type": "boolean"},
                    "total_rows": {"type": "boolean"},
                    "imports": {"type": "boolean", "description": "accepted; hush has no imported data"},
                    "fill_gaps": {"type": "boolean", "description": "hush: empty time buckets as zero rows"},
                    "comparisons": {
                        "description": "hush: compare with another period",
                        "oneOf": [
                            {"type": "null"},
                            {"type": "object", "additionalProperties": false, "required": ["mode"],
                             "properties": {"mode": {"enum": ["previous_period", "year_over_year"]}}},
                            {"type": "object", "additionalProperties": false, "required": ["mode", "date_range"],
                             "properties": {"mode": {"const": "custom"},
                                            "date_range": {"$ref": "#/definitions/date_pair"}}}
                        ]
                    }
                }
            },
            "pagination": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                    "offset": {"type": "integer", "minimum": 0}
                }
            }
        },
        "definitions": {
            "dimension": {"anyOf": [
                {"enum": dimensions},
                {"enum": times},
                {"type": "string", "pattern": prop_pattern, "maxLength": MAX_VALUE_BYTES + PROP_PREFIX.len()}
            ]},
            "filter_dimension": {"anyOf": [
                {"enum": dimensions},
                {"type": "string", "pattern": prop_pattern}
            ]},
            "date_pair": {
                "type": "array", "minItems": 2, "maxItems": 2,
                "items": {"type": "string", "format": "date"}
            },
            "date_range": {"oneOf": [
                {"enum": ["day", "24h", "month", "year", "all"]},
                {"type": "string", "pattern": "^[1-9][0-9]*(d|mo)$",
                 "description": format!("last N days or months, at most {MAX_RANGE_DAYS} days")},
                {"$ref": "#/definitions/date_pair"},
                {"type": "array", "minItems": 2, "maxItems": 2,
                 "items": {"type": "string", "format": "date-time"}}
            ]},
            "filter": {
                "description": format!("nesting at most {MAX_FILTER_DEPTH} deep; at most {MAX_CLAUSES} values in all"),
                "oneOf": [
                    {"type": "array", "minItems": 3, "maxItems": 4, "items": [
                        {"enum": ops},
                        {"anyOf": [{"$ref": "#/definitions/filter_dimension"}]},
                        {"type": "array", "minItems": 1,
                         "items": {"type": ["string", "integer"], "maxLength": MAX_VALUE_BYTES}},
                        {"type": "object", "additionalProperties": false,
                         "properties": {"case_sensitive": {"type": "boolean"}}}
                    ]},
                    {"type": "array", "minItems": 2, "maxItems": 2, "items": [
                        {"enum": ["and", "or"]},
                        {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/filter"}}
                    ]},
                    {"type": "array", "minItems": 2, "maxItems": 2, "items": [
                        {"enum": ["not", "has_done", "has_not_done"]},
                        {"$ref": "#/definitions/filter"}
                    ]}
                ]
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::request::Dimension;

    /// Every name the schema lists is one the parser accepts, and the other way round
    /// for the closed lists.
    #[test]
    fn schema_lists_what_the_parser_accepts() {
        let s = schema();
        let listed: Vec<&str> = s["properties"]["metrics"]["items"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(listed.len(), Metric::ALL.len());
        for name in &listed {
            assert!(Metric::from_name(name).is_some(), "{name}");
        }
        let dims = s["definitions"]["dimension"]["anyOf"][0]["enum"]
            .as_array()
            .unwrap();
        assert_eq!(
            dims.len(),
            EventDimension::ALL.len() + VisitDimension::ALL.len()
        );
        for d in dims {
            assert!(Dimension::from_name(d.as_str().unwrap()).is_some(), "{d}");
        }
        let ops = s["definitions"]["filter"]["oneOf"][0]["items"][0]["enum"]
            .as_array()
            .unwrap();
        assert_eq!(ops.len(), Op::ALL.len());
    }
}
