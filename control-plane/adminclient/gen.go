// Package adminclient is the Go client of the admin and analytics API,
// generated from schemas/openapi/openapi.yaml by oapi-codegen; the CLI uses
// it. Regenerate with `go generate ./control-plane/adminclient`.
package adminclient

//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.5.1 -generate types,client -package adminclient -o client.gen.go ../../schemas/openapi/openapi.yaml
