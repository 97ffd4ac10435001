//! The environment variables each service reads, found where they are
//! read rather than listed by hand, so that a deployment manifest setting a
//! misspelt, renamed or foreign variable fails a test instead of being
//! ignored by the service.
//!
//! A service reads a variable when its name is passed to one of
//! `common::config`'s helpers ([`HELPERS`]), as a string literal or a
//! `const` of the same crate, outside test code: in the service's own crate,
//! or in `common`. A name `common` reads belongs to the services the
//! README's configuration table gives it (`all`, `listeners`, or by name);
//! one the table leaves out, to every service, since they all run
//! `common`. The OpenTelemetry SDK reads the standard `OTEL_*` variables
//! itself: [`is_standard`].

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;

use crate::files;
use crate::platform;

/// `common::config`'s functions that take a variable's name first.
const HELPERS: [&str; 7] = [
    "var",
    "parse_or",
    "parse",
    "millis_or",
    "string_or",
    "http_url_or",
    "http_url",
];

/// The crate every service shares.
const COMMON: &str = "common";

/// Variables the OpenTelemetry SDK reads on its own.
pub fn is_standard(name: &str) -> bool {
    name.starts_with("OTEL_")
}

/// The variables `service` reads: one of `platform::RUST_SERVICES`'s
/// names, which are also their crates' folders.
pub fn read_by(service: &str) -> BTreeSet<String> {
    let contract = platform::service(service);
    let table = readme_table();
    let shared = read_in_crate(COMMON).into_iter().filter(|name| {
        table.get(name).is_none_or(|row| {
            let services = row.services.as_str();
            services == "all"
                || services.contains(contract.name)
                || (contract.is_listener() && services.contains("listeners"))
        })
    });
    read_in_crate(service).into_iter().chain(shared).collect()
}

/// The names passed to [`HELPERS`] in the crate at `<root>/<krate>/src`.
pub fn read_in_crate(krate: &str) -> BTreeSet<String> {
    let sources: Vec<String> = files::rust_files(&files::repo_root().join(krate).join("src"))
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            // Test modules set variables of their own.
            text.split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let call = Regex::new(&format!(
        r#"\b(?:{})(?:::<[^>]*>)?\(\s*(?:"([A-Z][A-Z0-9_]*)"|([A-Z][A-Z0-9_]*)\s*[,)])"#,
        HELPERS.join("|")
    ))
    .expect("a valid pattern");
    let constant = Regex::new(r#"const ([A-Z][A-Z0-9_]*): &str = "([A-Z][A-Z0-9_]*)";"#)
        .expect("a valid pattern");
    let constants: BTreeMap<&str, &str> = sources
        .iter()
        .flat_map(|text| constant.captures_iter(text))
        .map(|c| {
            let (_, [name, value]) = c.extract();
            (name, value)
        })
        .collect();
    sources
        .iter()
        .flat_map(|text| call.captures_iter(text))
        .filter_map(|c| match (c.get(1), c.get(2)) {
            (Some(literal), _) => Some(literal.as_str().to_owned()),
            (None, Some(constant)) => constants.get(constant.as_str()).map(|v| (*v).to_owned()),
            (None, None) => None,
        })
        .collect()
}

/// A row of the README's configuration table, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Documented {
    /// Who reads it: `all`, `listeners`, service names.
    pub services: String,
    /// Its default: `5000`, `(unset)`, `512 / 64`, ...
    pub default: String,
}

impl Documented {
    /// The default as a number; panics naming `variable` when it is none.
    pub fn default_number(&self, variable: &str) -> u64 {
        self.default.parse().unwrap_or_else(|_| {
            panic!(
                "README.md gives {variable} the default {:?}, not a number",
                self.default
            )
        })
    }
}

/// The README's configuration table, by variable (a row naming several
/// variables gives each the same row).
pub fn readme_table() -> BTreeMap<String, Documented> {
    let readme = files::read_text("README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README.md has a Configuration section");
    let name = Regex::new(r"`([A-Z][A-Z0-9_]*)`").expect("a valid pattern");
    let mut table = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let row = Documented {
            services: cells[2].to_owned(),
            default: cells[3].to_owned(),
        };
        for variable in name.captures_iter(cells[1]) {
            table.insert(variable[1].to_owned(), row.clone());
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::RUST_SERVICES;

    #[test]
    fn each_service_reads_its_own_variables_and_the_shared_ones_it_is_given() {
        let web = read_by("public-web");
        for name in [
            "DISPATCH_PORT",
            "CALLBACK_URL",
            "AMQP_URL",
            "MAX_CONNECTIONS",
        ] {
            assert!(web.contains(name), "public-web reads {name}: {web:?}");
        }
        // Through a const: `const ENV_VAR: &str = "SCENARIO_CONFIG"`.
        assert!(read_by("scenario-listener").contains("SCENARIO_CONFIG"));
        // Read in common, but the README gives it to public-web and the
        // dispatcher only.
        assert!(read_by("dispatcher").contains("CALLBACK_SECRET"));
        assert!(!read_by("ping-listener").contains("CALLBACK_SECRET"));
        assert!(!read_by("dispatcher").contains("DISPATCH_PORT"));
        // Test modules' own variables are not the service's.
        assert!(
            read_in_crate(COMMON)
                .iter()
                .all(|n| !n.starts_with("COMMON_TEST_"))
        );
        for service in RUST_SERVICES {
            assert!(read_by(service.name).contains("PORT"), "{}", service.name);
        }
    }

    #[test]
    fn the_readme_table_names_who_reads_what() {
        let table = readme_table();
        assert_eq!(table["PORT"].services, "all");
        assert!(
            table["SUBSCRIBE_TOKEN_ISSUER"]
                .services
                .contains("public-web")
        );
        assert_eq!(
            table["REQUEST_TIMEOUT_MS"].default_number("REQUEST_TIMEOUT_MS"),
            10_000
        );
        assert!(is_standard("OTEL_SERVICE_NAME") && !is_standard("PORT"));
    }
}
