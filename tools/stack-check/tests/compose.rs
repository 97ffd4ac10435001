//! docker-compose.yml, the Dockerfiles and the devcontainer, checked from
//! their files: every service is healthchecked and waits for healthy
//! dependencies, every image is pinned, every mounted file exists, no host
//! port is taken twice, the listeners can scale, scenario-listener finds
//! its scenario and public-web, the webhook-sender its PostgreSQL and its
//! generated admin token, and the devcontainer runs the infrastructure
//! around a dev container that stands in for the services.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::Command;

use stack_check::compose::{
    self, COMPOSE_FILE, Compose, DEVCONTAINER_COMPOSE_FILE, HostPort, Mount,
};
use stack_check::platform::{self, RUST_SERVICES};
use stack_check::{files, scenarios};

const INFRASTRUCTURE: [&str; 9] = [
    "secrets",
    "probe",
    "rabbitmq",
    "postgres",
    "otel-collector",
    "tempo",
    "loki",
    "prometheus",
    "grafana",
];
const DEVCONTAINER_JSON: &str = ".devcontainer/devcontainer.json";

fn stack() -> Compose {
    Compose::load(&[COMPOSE_FILE])
}

fn dev_stack() -> Compose {
    Compose::load(&[COMPOSE_FILE, DEVCONTAINER_COMPOSE_FILE])
}

/// Both ways the compose files are used, named for messages.
fn projects() -> [(&'static str, Compose); 2] {
    [
        ("docker compose up", stack()),
        ("devcontainer", dev_stack()),
    ]
}

#[test]
fn compose_file_defines_the_whole_stack() {
    let services: BTreeSet<String> = stack().services().into_keys().collect();
    // Exactly: a service this crate does not know would go unchecked, so a
    // new one joins stack_check::platform::RUST_SERVICES (or INFRASTRUCTURE).
    let expected: BTreeSet<String> = INFRASTRUCTURE
        .into_iter()
        .chain(RUST_SERVICES.map(|s| s.name))
        .map(str::to_owned)
        .collect();
    assert_eq!(services, expected, "the services of {COMPOSE_FILE}");
    let dev: BTreeSet<String> = dev_stack().services().into_keys().collect();
    assert_eq!(
        dev.difference(&services).collect::<Vec<_>>(),
        ["dev"],
        "the devcontainer adds exactly the dev service"
    );
}

/// Compose's own validation, offline: `docker compose config` (the v2
/// plugin) or Debian's `docker-compose` (1.29) when one is installed. It is
/// optional, unlike promtool: the structural checks below hold either way.
#[test]
fn compose_cli_accepts_both_projects() {
    let clis: [&[&str]; 2] = [&["docker", "compose"], &["docker-compose"]];
    let available = clis.into_iter().find(|cli| {
        Command::new(cli[0])
            .args(&cli[1..])
            .arg("version")
            .output()
            .is_ok_and(|out| out.status.success())
    });
    let Some(cli) = available else {
        std::io::stderr()
            .write_all(
                b"\n***** NOTE: neither `docker compose` nor `docker-compose` is installed: \
                  skipping `config` validation of the compose files.\n\n",
            )
            .expect("stderr is writable");
        return;
    };
    for files in [
        &[COMPOSE_FILE][..],
        &[COMPOSE_FILE, DEVCONTAINER_COMPOSE_FILE][..],
    ] {
        let mut command = Command::new(cli[0]);
        command.args(&cli[1..]).current_dir(files::repo_root());
        for file in files {
            command.args(["-f", file]);
        }
        let output = command
            .args(["config", "-q"])
            .output()
            .expect("the compose CLI runs");
        assert!(
            output.status.success(),
            "{} config rejects {files:?}:\n{}",
            cli.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn every_service_has_a_healthcheck() {
    for (project, compose) in projects() {
        for (name, service) in compose.services() {
            let test = compose::healthcheck_test(service)
                .unwrap_or_else(|| panic!("{project}: service {name} has no healthcheck"));
            assert!(
                matches!(test[0].as_str(), "CMD" | "CMD-SHELL"),
                "{project}: {name}'s healthcheck starts with {:?}",
                test[0]
            );
            // A probe from the shared volume needs the volume and the service
            // that fills it.
            if test[1].starts_with("/probe/") {
                let mounts_probe = compose::mounts(service)
                    .iter()
                    .any(|m| matches!(m, Mount::Volume { name, target } if name == "probe" && target == "/probe"));
                assert!(
                    mounts_probe,
                    "{project}: {name} runs /probe/… but does not mount the probe volume at /probe"
                );
                let waits = compose::depends_on(service)
                    .iter()
                    .any(|(dep, _)| dep == "probe");
                assert!(
                    waits || name == "probe",
                    "{project}: {name} runs /probe/… but does not depend on the probe service"
                );
            }
        }
    }
}

#[test]
fn every_dependency_waits_until_healthy_and_there_is_no_cycle() {
    for (project, compose) in projects() {
        let services = compose.services();
        let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, service) in &services {
            for (dependency, condition) in compose::depends_on(service) {
                assert!(
                    services.contains_key(&dependency),
                    "{project}: {name} depends on unknown service {dependency}"
                );
                assert_eq!(
                    condition.as_deref(),
                    Some("service_healthy"),
                    "{project}: {name} -> {dependency} must use condition: service_healthy"
                );
                graph.entry(name.clone()).or_default().push(dependency);
            }
        }
        // Kahn's algorithm: every service must become startable.
        let mut remaining: BTreeMap<&str, usize> = services
            .keys()
            .map(|name| (name.as_str(), graph.get(name).map_or(0, Vec::len)))
            .collect();
        let mut started = BTreeSet::new();
        while let Some(ready) = remaining
            .iter()
            .find(|(_, waiting)| **waiting == 0)
            .map(|(name, _)| name.to_string())
        {
            remaining.remove(ready.as_str());
            started.insert(ready.clone());
            for (name, deps) in &graph {
                if let Some(waiting) = remaining.get_mut(name.as_str()) {
                    *waiting -= deps.iter().filter(|d| **d == ready).count();
                }
            }
        }
        assert!(
            remaining.is_empty(),
            "{project}: dependency cycle among {:?}",
            remaining.keys()
        );
    }
}

#[test]
fn every_service_has_a_restart_policy() {
    for (project, compose) in projects() {
        for (name, service) in compose.services() {
            let policy = service["restart"].as_str().unwrap_or("no");
            assert!(
                matches!(policy, "always" | "unless-stopped") || policy.starts_with("on-failure"),
                "{project}: {name} has restart policy {policy:?}"
            );
        }
    }
}

#[test]
fn every_image_and_base_image_is_pinned() {
    for (project, compose) in projects() {
        for (name, service) in compose.services() {
            match service["image"].as_str() {
                Some(image) => assert!(
                    compose::image_is_pinned(image),
                    "{project}: {name} uses unpinned image {image}"
                ),
                None => assert!(
                    !service["build"].is_null(),
                    "{project}: {name} has neither image nor build"
                ),
            }
        }
    }
    for dockerfile in ["Dockerfile", ".devcontainer/Dockerfile"] {
        let (bases, _) = compose::dockerfile_stages(&files::read_text(dockerfile));
        assert!(!bases.is_empty(), "{dockerfile} has no FROM");
        for base in bases {
            assert!(
                compose::image_is_pinned(&base),
                "{dockerfile}: unpinned base image {base}"
            );
        }
    }
}

#[test]
fn mounted_files_build_contexts_and_named_volumes_exist() {
    let root = files::repo_root();
    for (project, compose) in projects() {
        let declared = compose.declared_volumes();
        for (name, service) in compose.services() {
            for mount in compose::mounts(service) {
                match mount {
                    Mount::Bind { source, .. } => assert!(
                        root.join(&source).exists(),
                        "{project}: {name} mounts {source}, which does not exist"
                    ),
                    Mount::Volume { name: volume, .. } => assert!(
                        declared.contains(&volume),
                        "{project}: {name} mounts undeclared volume {volume}"
                    ),
                    Mount::Other { .. } => {}
                }
            }
            let build = &service["build"];
            if build.is_null() {
                continue;
            }
            let context = root.join(build["context"].as_str().unwrap_or("."));
            assert!(
                context.is_dir(),
                "{project}: {name}'s build context is missing"
            );
            let dockerfile = context.join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
            let text = std::fs::read_to_string(&dockerfile)
                .unwrap_or_else(|e| panic!("{project}: {name}: {}: {e}", dockerfile.display()));
            if let Some(target) = build["target"].as_str() {
                let (_, stages) = compose::dockerfile_stages(&text);
                assert!(
                    stages.iter().any(|s| s == target),
                    "{project}: {name} builds target {target}, which {} lacks",
                    dockerfile.display()
                );
            }
        }
    }
}

/// Host ports published by the given services, checked for collisions.
fn host_ports(
    project: &str,
    compose: &Compose,
    running: impl Fn(&str) -> bool,
) -> BTreeMap<u16, (String, HostPort)> {
    let mut taken: BTreeMap<u16, (String, HostPort)> = BTreeMap::new();
    for (name, service) in compose.services() {
        if !running(&name) {
            continue;
        }
        for port in compose::published_ports(service) {
            if let Some((other, previous)) = taken.get(&port.port) {
                // Two bindings only coexist on distinct specific addresses
                // or protocols.
                let distinct = previous.protocol != port.protocol
                    || (!previous.host_ip.is_empty()
                        && !port.host_ip.is_empty()
                        && previous.host_ip != port.host_ip);
                assert!(
                    distinct,
                    "{project}: host port {} published by both {other} and {name}",
                    port.port
                );
            }
            taken.insert(port.port, (name.clone(), port));
        }
    }
    taken
}

#[test]
fn no_host_port_is_published_twice() {
    for (project, compose) in projects() {
        host_ports(project, &compose, |_| true);
    }
}

#[test]
fn host_ports_follow_the_contract() {
    let compose = stack();
    let published: BTreeMap<u16, (String, u16)> = host_ports("compose", &compose, |_| true)
        .into_iter()
        .map(|(port, (service, p))| (port, (service, p.container_port)))
        .collect();
    let expected: BTreeMap<u16, (String, u16)> = [
        (3000, ("public-web", 3000)),
        (3001, ("dispatcher", 3001)),
        (3006, ("webhook-sender", 3006)),
        (3300, ("grafana", 3000)),
        (5672, ("rabbitmq", 5672)),
        (15672, ("rabbitmq", 15672)),
        (4317, ("otel-collector", 4317)),
        (4318, ("otel-collector", 4318)),
        (9090, ("prometheus", 9090)),
        (3200, ("tempo", 3200)),
        (3100, ("loki", 3100)),
    ]
    .into_iter()
    .map(|(host, (service, container))| (host, (service.to_owned(), container)))
    .collect();
    assert_eq!(published, expected);
}

#[test]
fn services_can_scale() {
    for (project, compose) in projects() {
        for (name, service) in compose.services() {
            assert!(
                service["container_name"].is_null(),
                "{project}: {name} sets container_name, so it cannot be scaled or run twice"
            );
        }
        for listener in platform::listeners() {
            let name = listener.name;
            assert!(
                compose::published_ports(compose.service(name)).is_empty(),
                "{project}: {name} publishes a host port, so --scale would collide"
            );
        }
    }
}

#[test]
fn rust_services_are_wired_to_the_stack() {
    let compose = stack();
    let mut secrets = BTreeSet::new();
    for contract in RUST_SERVICES {
        let platform::RustService {
            name, port, queue, ..
        } = contract;
        let service = compose.service(name);
        assert_eq!(
            service["build"]["target"].as_str(),
            Some(name),
            "{name} builds its own Dockerfile target"
        );
        let env = compose::environment(service);
        let expect = |key: &str, value: &str| {
            assert_eq!(
                env.get(key).map(String::as_str),
                Some(value),
                "{name}: {key}"
            );
        };
        expect("AMQP_URL", "amqp://guest:guest@rabbitmq:5672/%2f");
        expect("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4318");
        expect("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
        expect("OTEL_SERVICE_NAME", name);
        expect("PORT", &port.to_string());
        let probe = compose::healthcheck_test(service).expect("healthcheck");
        assert!(
            probe
                .iter()
                .any(|word| word.contains(&format!("127.0.0.1:{port}/readyz"))),
            "{name}'s healthcheck must probe /readyz on its PORT {port}: {probe:?}"
        );
        // Only the webhook-sender keeps state, and only it waits for the
        // database (webhook_sender_uses_… checks the rest).
        assert_eq!(
            env.contains_key("DATABASE_URL"),
            contract.database,
            "{name}: DATABASE_URL"
        );
        assert_eq!(
            compose::depends_on(service)
                .iter()
                .any(|(dependency, _)| dependency == "postgres"),
            contract.database,
            "{name}: waits for PostgreSQL"
        );
        if contract.signs_internal_hops() {
            // public-web and the dispatcher: the two ends of the internal
            // hops, signed with the secret the `secrets` service makes.
            assert!(
                !env.contains_key("CALLBACK_SECRET"),
                "{name}: no secret written into the compose file"
            );
            secrets.insert(env.get("CALLBACK_SECRET_FILE").cloned().unwrap_or_default());
            assert!(
                compose::depends_on(service)
                    .iter()
                    .any(|(dependency, _)| dependency == "secrets"),
                "{name} waits for the secret"
            );
            continue;
        }
        assert!(
            !env.contains_key("CALLBACK_SECRET") && !env.contains_key("CALLBACK_SECRET_FILE"),
            "{name} takes no part in the internal hops: no secret of theirs"
        );
        let Some(queue) = queue else {
            assert!(contract.database, "{name}: a service of no known kind");
            continue;
        };
        // A listener consumes its own queue (the default, unless QUEUE says
        // the same), and waits for nothing but the broker and the collector:
        // its readiness is consuming, and any start order works.
        assert_eq!(
            env.get("QUEUE").map_or(queue, String::as_str),
            queue,
            "{name}: QUEUE"
        );
        let waits_for: BTreeSet<String> = compose::depends_on(service)
            .into_iter()
            .map(|(dependency, _)| dependency)
            .collect();
        assert_eq!(
            waits_for,
            BTreeSet::from(["otel-collector".to_owned(), "rabbitmq".to_owned()]),
            "{name} waits only for the broker and the collector"
        );
    }
    assert_eq!(
        secrets.len(),
        1,
        "public-web and dispatcher share one CALLBACK_SECRET_FILE: {secrets:?}"
    );
    assert!(!secrets.contains(""), "CALLBACK_SECRET_FILE is set");
    let web = compose::environment(compose.service("public-web"));
    assert_eq!(web["DISPATCHER_URL"], "http://dispatcher:3001");
    assert_eq!(web["CALLBACK_URL"], "http://public-web:3010/dispatch");
    assert_eq!(web["DISPATCH_PORT"], "3010");
    let dispatcher = compose::environment(compose.service("dispatcher"));
    assert_eq!(dispatcher["CALLBACK_ALLOW"], "http://public-web:3010");
}

/// Of a Dockerfile's sections (the text after each `FROM `), the one that
/// defines `stage`.
fn dockerfile_section<'a>(sections: &[&'a str], stage: &str) -> &'a str {
    sections
        .iter()
        .find(|s| {
            s.lines()
                .next()
                .is_some_and(|l| l.ends_with(&format!(" AS {stage}")))
        })
        .unwrap_or_else(|| panic!("stage {stage} not found"))
}

/// The words of the instruction in `section` that starts with `start`,
/// its `\`-continued lines included.
fn instruction_words<'a>(section: &'a str, start: &str) -> Vec<&'a str> {
    let at = section
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in the stage"));
    let mut words = Vec::new();
    for line in section[at..].lines() {
        let (line, continued) = match line.trim_end().strip_suffix('\\') {
            Some(line) => (line, true),
            None => (line, false),
        };
        words.extend(line.split_whitespace());
        if !continued {
            break;
        }
    }
    words
}

#[test]
fn scenario_listener_finds_its_scenario_and_public_web() {
    let compose = stack();
    let env = compose::environment(compose.service("scenario-listener"));
    let web_port = &compose::environment(compose.service("public-web"))["PORT"];
    assert_eq!(
        env.get("PUBLIC_WEB_URL").map(String::as_str),
        Some(format!("http://public-web:{web_port}").as_str()),
        "scenario-listener calls public-web on the compose network"
    );

    // With SCENARIO_CONFIG unset on the host, compose passes a path inside
    // the image: one of examples/, which the image carries at /app/examples.
    let config = compose::interpolate_unset(
        env.get("SCENARIO_CONFIG")
            .expect("scenario-listener needs SCENARIO_CONFIG"),
    );
    let example = config
        .strip_prefix("/app/")
        .unwrap_or_else(|| panic!("SCENARIO_CONFIG {config} is not under /app/examples"));
    assert!(
        scenarios::example_files().iter().any(|f| f == example),
        "SCENARIO_CONFIG {config} is no file of {}/",
        scenarios::EXAMPLES_DIR
    );

    let text = files::read_text("Dockerfile");
    let sections: Vec<&str> = text.split("\nFROM ").skip(1).collect();
    let stage = dockerfile_section(&sections, "scenario-listener");
    let copies_examples = stage.lines().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        matches!(words.as_slice(), ["COPY", from, to]
            if from.trim_end_matches('/') == scenarios::EXAMPLES_DIR
                && to.trim_end_matches('/') == "/app/examples")
    });
    assert!(
        copies_examples,
        "the scenario-listener image copies examples/ to /app/examples"
    );
    // Relative paths (SCENARIO_CONFIG=examples/..., as for bin/restart.sh)
    // resolve against the working directory.
    assert!(
        stage.lines().any(|l| l.trim() == "WORKDIR /app"),
        "the scenario-listener image works in /app"
    );
    assert!(
        stage.contains(&format!("SCENARIO_CONFIG={config}")),
        "the image's own SCENARIO_CONFIG default is compose's, {config}"
    );
    let ignored = files::read_text(".dockerignore");
    assert!(
        !ignored
            .lines()
            .any(|l| l.trim().trim_matches('/') == scenarios::EXAMPLES_DIR),
        ".dockerignore must not exclude examples/"
    );
}

#[test]
fn storage_is_local_volumes_only() {
    let compose = stack();
    for (name, service) in compose.services() {
        let image = service["image"].as_str().unwrap_or_default();
        assert!(!image.contains("minio"), "{name}: no object store wanted");
    }
    for (volume, definition) in compose.doc["volumes"].as_mapping().into_iter().flatten() {
        let driver = definition["driver"].as_str().unwrap_or("local");
        assert_eq!(driver, "local", "volume {volume:?} must be a local volume");
    }
    for stateful in [
        "rabbitmq",
        "postgres",
        "tempo",
        "loki",
        "prometheus",
        "grafana",
    ] {
        assert!(
            compose::mounts(compose.service(stateful))
                .iter()
                .any(|m| matches!(m, Mount::Volume { .. })),
            "{stateful} keeps its data in a named volume"
        );
    }
}

#[test]
fn dockerfile_builds_each_service_small_and_non_root() {
    let text = files::read_text("Dockerfile");
    let (_, stages) = compose::dockerfile_stages(&text);
    assert!(
        text.contains("cargo chef cook"),
        "dependencies are cooked in their own cached layer"
    );
    // Each service stage starts from the runtime stage, not from the
    // toolchain, and runs its own binary.
    let sections: Vec<&str> = text.split("\nFROM ").skip(1).collect();
    // One builder compiles every binary, so the images share its cache.
    let builder = dockerfile_section(&sections, "builder");
    let build = instruction_words(builder, "RUN cargo build");
    for platform::RustService { name, port, .. } in RUST_SERVICES {
        assert!(stages.iter().any(|s| s == name), "no stage {name}");
        assert!(
            build.windows(2).any(|w| w == ["--bin", name]),
            "the builder's cargo build compiles --bin {name}: {build:?}"
        );
        let section = dockerfile_section(&sections, name);
        assert!(
            section.contains(&format!("ENV PORT={port} "))
                && section.contains(&format!("127.0.0.1:{port}/readyz")),
            "stage {name} serves and probes its port {port}"
        );
        assert!(
            section.starts_with("runtime AS"),
            "stage {name} must build on the slim runtime stage"
        );
        assert!(
            section.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{name}\"]")),
            "stage {name} must run its binary"
        );
    }
    let runtime = dockerfile_section(&sections, "runtime");
    assert!(
        runtime.contains("-slim"),
        "the runtime stage uses a slim base"
    );
    let user = runtime
        .lines()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    assert!(
        user != "root" && user != "0",
        "the services must not run as root"
    );
    assert!(
        runtime.contains("curl"),
        "the runtime image has the healthchecks' curl"
    );
    let ignored = files::read_text(".dockerignore");
    for path in ["target/", ".git/"] {
        assert!(
            ignored.lines().any(|l| l.trim() == path),
            ".dockerignore must exclude {path}"
        );
    }
}

#[test]
fn devcontainer_runs_the_infrastructure_around_a_dev_container() {
    let config = files::load_jsonc(DEVCONTAINER_JSON);
    let compose_files: Vec<&str> = config["dockerComposeFile"]
        .as_array()
        .expect("dockerComposeFile is a list")
        .iter()
        .map(|f| f.as_str().expect("a path"))
        .collect();
    let root = files::repo_root();
    let resolved: Vec<String> = compose_files
        .iter()
        .map(|f| {
            let path = root.join(".devcontainer").join(f);
            assert!(path.is_file(), "{DEVCONTAINER_JSON} names missing {f}");
            path.canonicalize()
                .expect("canonical path")
                .strip_prefix(&root)
                .expect("inside the repository")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(resolved, [COMPOSE_FILE, DEVCONTAINER_COMPOSE_FILE]);

    let compose = dev_stack();
    let services = compose.services();
    let dev_name = config["service"].as_str().expect("service");
    let dev = compose.service(dev_name);

    let run: BTreeSet<&str> = config["runServices"]
        .as_array()
        .expect("runServices lists what to start")
        .iter()
        .map(|s| s.as_str().expect("a service name"))
        .collect();
    for name in &run {
        assert!(
            services.contains_key(*name),
            "runServices names unknown {name}"
        );
    }
    for name in INFRASTRUCTURE.iter().chain([&dev_name]) {
        assert!(run.contains(name), "runServices must start {name}");
    }
    // The dev container runs the services itself: starting the containers
    // too would put two consumers on the dispatcher's reply queue.
    for name in RUST_SERVICES.map(|s| s.name) {
        assert!(!run.contains(name), "runServices must not start {name}");
        let starts_it = run.iter().any(|s| {
            compose::depends_on(compose.service(s))
                .iter()
                .any(|(d, _)| d == name)
        });
        assert!(
            !starts_it,
            "a started service depends on {name}, which would start it"
        );
    }

    // The dev container answers to the services' names, so Prometheus's
    // scrape targets and the callback URLs resolve to it.
    let aliases: BTreeSet<&str> = dev["networks"]["default"]["aliases"]
        .as_sequence()
        .expect("the dev service has network aliases")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    for platform::RustService { name, port, .. } in RUST_SERVICES {
        assert!(
            aliases.contains(name),
            "the dev container must answer to {name}"
        );
        assert_eq!(
            config["portsAttributes"][port.to_string()]["label"].as_str(),
            Some(name),
            "portsAttributes names {name}'s port {port}"
        );
    }
    let env = compose::environment(dev);
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://otel-collector:4318"
    );
    assert_eq!(env["OTEL_EXPORTER_OTLP_PROTOCOL"], "http/protobuf");
    assert_eq!(env["AMQP_URL"], "amqp://guest:guest@rabbitmq:5672/%2f");
    assert_eq!(
        env.get("CALLBACK_SECRET"),
        None,
        "bin/restart.sh makes the dev container's secret; none is written down"
    );
    assert_eq!(
        env.get("ADMIN_TOKEN"),
        None,
        "bin/restart.sh makes the dev container's admin token; none is written down"
    );
    // bin/restart.sh and bin/test use the compose PostgreSQL, as the
    // webhook-sender container does.
    assert_eq!(
        env.get("DATABASE_URL"),
        compose::environment(compose.service("webhook-sender")).get("DATABASE_URL"),
        "the dev container's DATABASE_URL is the webhook-sender's"
    );
    assert!(
        compose::depends_on(dev)
            .iter()
            .any(|(dependency, _)| dependency == "postgres"),
        "the dev container waits for PostgreSQL"
    );

    let workspace = config["workspaceFolder"].as_str().expect("workspaceFolder");
    assert!(
        compose::mounts(dev).iter().any(
            |m| matches!(m, Mount::Bind { source, target } if source == "." && target == workspace)
        ),
        "the repository is mounted at workspaceFolder {workspace}"
    );

    // Forwarded ports must not collide with what the started services
    // publish on the host, and public-web's 3000 is among them.
    let published = host_ports("devcontainer", &compose, |name| run.contains(name));
    let forwarded: Vec<u64> = config["forwardPorts"]
        .as_array()
        .expect("forwardPorts")
        .iter()
        .map(|p| p.as_u64().expect("forwarded ports are numbers"))
        .collect();
    assert!(forwarded.contains(&3000), "public-web's port is forwarded");
    for port in &forwarded {
        let collision = u16::try_from(*port).ok().and_then(|p| published.get(&p));
        assert!(
            collision.is_none(),
            "forwarded port {port} is also published by {:?}",
            collision.map(|(s, _)| s)
        );
    }
    let grafana = compose::published_ports(compose.service("grafana"));
    assert_eq!(grafana.len(), 1);
    assert!(
        grafana[0].port != 3000,
        "Grafana's host port must not be public-web's 3000"
    );

    let toolchain = files::read_text(".devcontainer/Dockerfile");
    assert!(
        toolchain.contains("rust-analyzer"),
        "the dev image has rust-analyzer"
    );
    assert!(
        toolchain.contains("prometheus"),
        "the dev image has promtool for the tests"
    );
}

#[test]
fn the_guide_names_the_ports_the_stack_publishes() {
    let guide = files::read_text("docs/stack.md");
    let compose = stack();
    for (service, port) in [
        ("public-web", 3000),
        ("webhook-sender", 3006),
        ("grafana", 3300),
        ("rabbitmq", 15672),
    ] {
        assert!(
            compose::published_ports(compose.service(service))
                .iter()
                .any(|p| p.port == port),
            "{service} is published on {port}"
        );
        assert!(
            guide.contains(&format!("localhost:{port}")),
            "docs/stack.md must tell where {service} is (localhost:{port})"
        );
    }
    for way in ["docker compose up", "bin/restart.sh", "Reopen in Container"] {
        assert!(guide.contains(way), "docs/stack.md must describe {way:?}");
    }
    for listener in platform::listeners() {
        let name = listener.name;
        assert!(
            guide.contains(&format!("`{name}`")),
            "docs/stack.md must name {name}"
        );
    }
    for scaling in ["--scale ping-listener=", "--scale prime-listener="] {
        assert!(
            guide.contains(scaling),
            "docs/stack.md must show {scaling}N"
        );
    }
    assert!(
        guide.contains(&format!("cat {ADMIN_TOKEN_DIR}/admin-token")),
        "docs/stack.md must tell how to read the webhook-sender's admin token"
    );
}

/// Where the webhook-sender container finds its admin token.
const ADMIN_TOKEN_DIR: &str = "/run/webhook-secrets";

/// `postgres://user:password@host:port/database` as its parts.
fn database_url_parts(url: &str) -> [&str; 5] {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .unwrap_or_else(|| panic!("{url} is no postgres:// URL"));
    let (userinfo, rest) = rest
        .split_once('@')
        .unwrap_or_else(|| panic!("{url} names no user"));
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let (host_port, database) = rest
        .split_once('/')
        .unwrap_or_else(|| panic!("{url} names no database"));
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "5432"));
    [user, password, host, port, database]
}

#[test]
fn webhook_sender_uses_the_compose_postgres() {
    let compose = stack();
    let postgres = compose.service("postgres");
    let db_env = compose::environment(postgres);
    let user = db_env
        .get("POSTGRES_USER")
        .map_or("postgres", String::as_str);
    let password = db_env
        .get("POSTGRES_PASSWORD")
        .expect("POSTGRES_PASSWORD: the image refuses to start without one");
    let database = db_env.get("POSTGRES_DB").map_or(user, String::as_str);
    let url = &compose::environment(compose.service("webhook-sender"))["DATABASE_URL"];
    assert_eq!(
        database_url_parts(url),
        [user, password.as_str(), "postgres", "5432", database],
        "the webhook-sender's DATABASE_URL is the compose PostgreSQL's"
    );

    // The data survives re-creation: a named volume where the image keeps
    // PGDATA (/var/lib/postgresql/data up to 17; from 18 the image wants
    // the volume one level up).
    let image = postgres["image"].as_str().expect("postgres image");
    let major: u32 = image
        .split_once(':')
        .and_then(|(_, tag)| tag.split(['.', '-']).next())
        .and_then(|major| major.parse().ok())
        .unwrap_or_else(|| panic!("{image}: no major version in the tag"));
    let data = if major >= 18 {
        "/var/lib/postgresql"
    } else {
        "/var/lib/postgresql/data"
    };
    assert!(
        compose::mounts(postgres)
            .iter()
            .any(|m| matches!(m, Mount::Volume { target, .. } if target == data)),
        "{image} keeps its data in a named volume at {data}"
    );
    // Ready means ready over TCP: while a new volume is initialised, the
    // image's temporary server listens on the Unix socket only.
    let probe = compose::healthcheck_test(postgres).expect("healthcheck");
    assert!(
        probe.iter().any(|w| w == "pg_isready")
            && probe.windows(2).any(|w| w == ["-h", "127.0.0.1"])
            && probe.windows(2).any(|w| w[0] == "-d" && w[1] == database),
        "postgres's healthcheck asks pg_isready over TCP for {database}: {probe:?}"
    );
}

#[test]
fn webhook_sender_reads_a_generated_admin_token_and_allows_no_private_network() {
    let compose = stack();
    let sender = compose.service("webhook-sender");
    let env = compose::environment(sender);
    for written in ["ADMIN_TOKEN", "ADMIN_TOKEN_FILE"] {
        assert!(
            !env.contains_key(written),
            "webhook-sender: no {written} written into the compose file"
        );
    }
    assert_eq!(
        env.get("WEBHOOK_ALLOW_CIDRS")
            .map(String::as_str)
            .unwrap_or(""),
        "",
        "webhook-sender: endpoints on the public internet only"
    );
    assert_eq!(
        env.get("INTERNAL_BIND_ADDR").map(String::as_str),
        Some("0.0.0.0"),
        "webhook-sender: Prometheus and the published port reach it"
    );
    let published = compose::published_ports(sender);
    assert!(
        published.iter().all(|p| p.host_ip == "127.0.0.1"),
        "the management API is published on the host's loopback only: {published:?}"
    );

    // The token's volume: made by the `secrets` service, mounted by the
    // webhook-sender and by nobody else.
    let volume = compose::mounts(sender)
        .into_iter()
        .find_map(|m| match m {
            Mount::Volume { name, target } if target == ADMIN_TOKEN_DIR => Some(name),
            _ => None,
        })
        .unwrap_or_else(|| panic!("webhook-sender mounts no volume at {ADMIN_TOKEN_DIR}"));
    for (name, service) in compose.services() {
        let mounted_at = compose::mounts(service).into_iter().find_map(|m| match m {
            Mount::Volume { name: v, target } if v == volume => Some(target),
            _ => None,
        });
        match (name.as_str(), mounted_at) {
            ("webhook-sender", _) => {}
            ("secrets", Some(target)) => {
                let file = format!("{target}/admin-token");
                let command = service["command"]
                    .as_sequence()
                    .expect("the secrets command")
                    .iter()
                    .filter_map(|w| w.as_str())
                    .map(compose::interpolate_unset)
                    .collect::<Vec<_>>()
                    .join(" ");
                assert!(command.contains(&file), "the secrets service makes {file}");
                let probe = compose::healthcheck_test(service)
                    .expect("healthcheck")
                    .join(" ");
                assert!(
                    probe.contains(&file),
                    "the secrets service is healthy once {file} is made: {probe}"
                );
            }
            ("secrets", None) => panic!("the secrets service does not fill volume {volume}"),
            (other, Some(_)) => panic!("{other} mounts the admin token's volume {volume}"),
            (_, None) => {}
        }
    }
    assert!(
        compose::depends_on(sender)
            .iter()
            .any(|(dependency, _)| dependency == "secrets"),
        "webhook-sender waits for its token"
    );

    // ADMIN_TOKEN has no *_FILE form: the entrypoint reads the file into
    // it and execs the binary (the Dockerfile stage's). Run it, as compose
    // would after interpolation, on a token in a scratch directory.
    let entrypoint: Vec<String> = sender["entrypoint"]
        .as_sequence()
        .expect("webhook-sender's entrypoint reads the token")
        .iter()
        .map(|w| compose::interpolate_unset(w.as_str().expect("entrypoint words are strings")))
        .collect();
    let [shell, flag, script] = entrypoint.as_slice() else {
        panic!("the entrypoint is [shell, -c, script]: {entrypoint:?}");
    };
    assert_eq!((shell.as_str(), flag.as_str()), ("/bin/sh", "-c"));
    let binary = "exec /usr/local/bin/webhook-sender";
    assert!(script.ends_with(binary), "the script ends with `{binary}`");
    let scratch = std::env::temp_dir().join(format!("stack-check-admin-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("a scratch directory");
    let script = script
        .replace(ADMIN_TOKEN_DIR, &scratch.to_string_lossy())
        .replace(binary, "exec printenv ADMIN_TOKEN");
    let run = || {
        Command::new("sh")
            .args(["-c", &script])
            .env_remove("ADMIN_TOKEN")
            .output()
            .expect("sh runs")
    };
    let token = "0123456789abcdef0123456789abcdef";
    std::fs::write(scratch.join("admin-token"), token).expect("the token file");
    let with_token = run();
    std::fs::write(scratch.join("admin-token"), "").expect("the token file");
    let empty = run();
    std::fs::remove_dir_all(&scratch).expect("the scratch directory goes");
    assert!(
        with_token.status.success(),
        "the entrypoint fails: {}",
        String::from_utf8_lossy(&with_token.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&with_token.stdout).trim(),
        token,
        "the service runs with the file's token as ADMIN_TOKEN"
    );
    assert!(
        !empty.status.success(),
        "with no token the entrypoint stops rather than run the management API disabled"
    );
}

/// The event stream's settings: every service that reads or appends to the
/// stream must agree on them (README), so none may set one the others don't.
#[test]
fn the_services_agree_on_the_event_stream() {
    let compose = stack();
    for variable in [
        "EVENT_STREAM",
        "EVENT_STREAM_MAX_AGE",
        "EVENT_STREAM_MAX_BYTES",
        "EVENT_STREAM_SEGMENT_BYTES",
    ] {
        let values: BTreeMap<Option<String>, Vec<&str>> =
            RUST_SERVICES.iter().fold(BTreeMap::new(), |mut values, s| {
                let env = compose::environment(compose.service(s.name));
                let value = env.get(variable).map(|v| compose::interpolate_unset(v));
                values.entry(value).or_default().push(s.name);
                values
            });
        assert_eq!(
            values.len(),
            1,
            "{variable} differs between services (None: the default): {values:?}"
        );
    }
}
