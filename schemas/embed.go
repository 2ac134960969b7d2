package schemas

import "embed"

// Migrations holds the ordered ClickHouse migrations, NNNN_name.sql, applied
// by `partners migrate`. Statements are separated by a line ending in ';'.
//
//go:embed clickhouse/migrations/*.sql
var Migrations embed.FS

// JSONSchemas holds the JSON Schemas of every record (json/*.schema.json).
//
//go:embed json/*.schema.json
var JSONSchemas embed.FS

// OpenAPI is the OpenAPI 3 spec of the admin and analytics API.
//
//go:embed openapi/openapi.yaml
var OpenAPI []byte
