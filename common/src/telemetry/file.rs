//! A span exporter that appends OTLP JSON lines to `<dir>/<service>.jsonl`:
//! one `ExportTraceServiceRequest` per batch, in the OTLP JSON encoding, so
//! `bin/trace` can print a trace without any collector and a collector's
//! file receiver could replay the file later.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

#[derive(Debug)]
pub struct JsonLinesSpanExporter {
    path: PathBuf,
    file: Mutex<File>,
    resource: ResourceAttributesWithSchema,
}

impl JsonLinesSpanExporter {
    pub fn create(dir: impl AsRef<Path>, service_name: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let path = dir.as_ref().join(format!("{service_name}.jsonl"));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
            resource: ResourceAttributesWithSchema::default(),
        })
    }
}

impl SpanExporter for JsonLinesSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource),
        };
        let mut line = serde_json::to_vec(&request)
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .map_err(|_| OTelSdkError::InternalFailure("trace file lock poisoned".into()))?;
        file.write_all(&line).map_err(|e| {
            OTelSdkError::InternalFailure(format!("writing {}: {e}", self.path.display()))
        })
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
    }
}
