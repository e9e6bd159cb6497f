//! Desired and live manifests of an application, and their diff, for the HTTP API and the CLI.
