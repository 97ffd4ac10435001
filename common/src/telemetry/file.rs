//! Span and log exporters that append OTLP JSON lines to files in one
//! directory: `<dir>/<service>.jsonl` (one `ExportTraceServiceRequest` per
//! batch) and `<dir>/<service>.logs.jsonl` (one `ExportLogsServiceRequest`
//! per batch), in the OTLP JSON encoding, so `bin/trace` can print a trace
//! with its log lines without any collector, and a collector's file
//! receiver could replay the files later.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::logs::tonic::group_logs_by_resource_and_scope;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use serde::Serialize;

/// One file of OTLP JSON lines, appended to by batch.
#[derive(Debug)]
struct JsonLines {
    path: PathBuf,
    file: Mutex<File>,
    resource: ResourceAttributesWithSchema,
}

impl JsonLines {
    fn create(dir: impl AsRef<Path>, file_name: String) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let path = dir.as_ref().join(file_name);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
            resource: ResourceAttributesWithSchema::default(),
        })
    }

    /// Appends `request` as one line.
    fn append(&self, request: &impl Serialize) -> OTelSdkResult {
        let mut line = serde_json::to_vec(request)
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .map_err(|_| OTelSdkError::InternalFailure("telemetry file lock poisoned".into()))?;
        file.write_all(&line).map_err(|e| {
            OTelSdkError::InternalFailure(format!("writing {}: {e}", self.path.display()))
        })
    }
}

/// Spans to `<dir>/<service>.jsonl`.
#[derive(Debug)]
pub struct JsonLinesSpanExporter(JsonLines);

impl JsonLinesSpanExporter {
    pub fn create(dir: impl AsRef<Path>, service_name: &str) -> std::io::Result<Self> {
        JsonLines::create(dir, format!("{service_name}.jsonl")).map(Self)
    }
}

impl SpanExporter for JsonLinesSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.append(&ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.0.resource),
        })
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.resource = resource.into();
    }
}

/// Log records to `<dir>/<service>.logs.jsonl`.
#[derive(Debug)]
pub struct JsonLinesLogExporter(JsonLines);

impl JsonLinesLogExporter {
    pub fn create(dir: impl AsRef<Path>, service_name: &str) -> std::io::Result<Self> {
        JsonLines::create(dir, format!("{service_name}.logs.jsonl")).map(Self)
    }
}

impl LogExporter for JsonLinesLogExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        self.0.append(&ExportLogsServiceRequest {
            resource_logs: group_logs_by_resource_and_scope(&batch, &self.0.resource),
        })
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.resource = resource.into();
    }
}
