//! Static checks of the deployment stack: docker-compose.yml, the
//! Dockerfiles, the devcontainer, the Grafana, Tempo, Loki, Prometheus
//! and collector configs under grafana/, and the Kubernetes manifests under
//! deploy/kubernetes.
//!
//! Docker cannot run where the tests run, nor a Kubernetes cluster, so
//! `tests/` validates the stack from its files instead: they parse, what
//! they reference exists, and the pieces agree with each other (and with
//! the platform's services, queues, example scenarios and the environment
//! variables each service reads, [`config_vars`]). This library holds what
//! those tests share, and [`dashboard_metric_names`] for the integration
//! test that checks the dashboards' metrics against the running services,
//! and [`logql`] for the one that runs the provisioned trace → logs query
//! on the log records the services export. `tests/modules.rs` checks the
//! crates' sources the same static way: no module import circles.

pub mod compose;
pub mod config_vars;
pub mod files;
pub mod kubernetes;
pub mod logql;
pub mod metrics;
pub mod platform;
pub mod promql;
pub mod scenarios;

pub use metrics::dashboard_metric_names;
