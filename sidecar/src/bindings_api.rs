//! The bindings building block: output calls from both APIs, and input
//! events delivered to the app — `POST /{route}` on HTTP apps (after an
//! `OPTIONS /{route}` probe answers 2xx or 405), `OnBindingEvent` on gRPC
//! apps (for the names `ListInputBindings` returns). An event the app does
//! not take is not acknowledged, so a queue delivers it again; an app may
//! answer with states to save and output bindings to send data on to.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use daprs_components::{
    Metadata,
    bindings::{Binding, Event, Handler, Reading, Request, Response},
    meta,
};
use daprs_proto::{
    common::http_extension::Verb,
    internals::ListStringValue,
    runtime::{BindingEventRequest, app_callback_client::AppCallbackClient},
};
use daprs_telemetry::trace::SpanContext;
use http::StatusCode;
use tonic::Code;

use crate::{
    error::ApiError,
    runtime::{BindingEntry, Runtime},
    state_api::SaveItem,
};

/// A binding's entry: which directions it serves, by what it can do and
/// its `direction` metadata, and the app route of its events.
pub fn entry(binding: Arc<dyn Binding>, metadata: &Metadata, name: &str) -> Result<BindingEntry, String> {
    let (can_in, can_out) = (binding.is_input(), !binding.operations().is_empty());
    let (mut input, mut output) = (can_in, can_out);
    if let Some(d) = meta(metadata, "direction") {
        let dirs: Vec<&str> = d.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
        input = dirs.contains(&"input");
        output = dirs.contains(&"output");
        if let Some(bad) = dirs.iter().find(|d| !matches!(**d, "input" | "output")) {
            return Err(format!("direction {bad:?} is not input or output"));
        }
        if input && !can_in {
            return Err("direction input: this binding type has no input direction".into());
        }
        if output && !can_out {
            return Err("direction output: this binding type has no output direction".into());
        }
    }
    let route = meta(metadata, "route")
        .unwrap_or(name)
        .trim_start_matches('/')
        .to_string();
    Ok(BindingEntry {
        binding,
        output,
        input,
        route,
    })
}

fn invoke_error(status: StatusCode, code: Code, message: String) -> ApiError {
    ApiError::new("ERR_INVOKE_OUTPUT_BINDING", status, code, message)
}

impl Runtime {
    /// Runs `operation` on output binding `name`.
    pub async fn invoke_binding(
        &self,
        name: &str,
        operation: String,
        data: Bytes,
        metadata: Metadata,
    ) -> Result<Response, ApiError> {
        let found = {
            let loaded = self.loaded.read().map_err(|_| {
                ApiError::internal("ERR_INVOKE_OUTPUT_BINDING", "component table unavailable")
            })?;
            match (loaded.bindings.get(name), loaded.kind_of(name)) {
                (Some(b), _) if b.output => Ok(b.clone()),
                (Some(_), _) => Err(format!("binding {name} is not an output binding")),
                (None, Some(kind)) => Err(format!(
                    "couldn't find output binding {name}: it is a {kind} component"
                )),
                (None, None) => Err(format!("couldn't find output binding {name}")),
            }
        };
        let entry = found.map_err(|m| invoke_error(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, m))?;
        let req = Request {
            operation,
            data,
            metadata,
        };
        let operation = req.operation.clone();
        self.timed(
            crate::metrics::Block::OutputBinding,
            name,
            &operation,
            self.outbound(
                name,
                || entry.binding.invoke(req.clone()),
                crate::components::backend_failure,
            ),
        )
        .await
        .map_err(|e| {
            let message = format!("error invoking output binding {name}: {e}");
            match e {
                daprs_components::Error::Invalid(_) => {
                    invoke_error(StatusCode::BAD_REQUEST, Code::InvalidArgument, message)
                }
                _ => invoke_error(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, message),
            }
        })
    }
}

/// Whether an HTTP app takes events of `route`: `OPTIONS /{route}` answers
/// 2xx or 405 within `--app-binding-options-timeout`.
async fn http_app_wants(rt: &Runtime, route: &str) -> bool {
    let Some(app) = rt.app.as_ref() else { return false };
    let probe = app.call_http(Verb::Options, route, "", Vec::new(), Default::default());
    match tokio::time::timeout(rt.settings.binding_options_timeout, probe).await {
        Ok(Ok((status, _))) => (200..300).contains(&status) || status == 405,
        _ => false,
    }
}

/// The handler that hands one binding's events to the app.
fn to_app(rt: Arc<Runtime>, name: String, route: String) -> Handler {
    Arc::new(move |e: Event| {
        let (rt, name, route) = (rt.clone(), name.clone(), route.clone());
        Box::pin(async move {
            let start = std::time::Instant::now();
            let delivered = deliver(&rt, &name, &route, e).await;
            rt.metrics
                .input_event(&name, delivered.is_ok(), crate::metrics::elapsed_ms(start));
            delivered
        })
    })
}

/// One event to the app, and what the app answers carried out.
async fn deliver(rt: &Arc<Runtime>, name: &str, route: &str, mut e: Event) -> Result<(), String> {
    let app = rt.app().map_err(|e| e.message)?;
    let parent = e.metadata.get("traceparent").and_then(|t| SpanContext::parse(t));
    let mut span = crate::trace::callback(&rt.tracer, parent, &["bindings/", name]);
    // The app's span is a child of the trigger's, when there is one.
    let trace = match &span {
        Some(s) => {
            e.metadata.insert("traceparent".into(), s.context().traceparent());
            Some(s.context())
        }
        None => parent,
    };
    if let Some(s) = span.as_mut().filter(|s| s.recording()) {
        s.set_attribute("db.name", name);
        s.set_attribute("rpc.service", "Dapr");
        s.set_attribute("db.system", "bindings");
        s.set_attribute("db.connection_string", route);
    }
    let delivered = deliver_traced(rt, app, name, route, e, trace).await;
    if let Some(mut s) = span {
        if let Err(err) = &delivered {
            s.set_error(err);
        }
        s.end();
    }
    delivered
}

async fn deliver_traced(
    rt: &Arc<Runtime>,
    app: &crate::app_channel::AppChannel,
    name: &str,
    route: &str,
    e: Event,
    trace: Option<SpanContext>,
) -> Result<(), String> {
    if let Some(channel) = app.grpc_channel() {
        let mut req = app.grpc_request(BindingEventRequest {
            name: name.to_string(),
            data: e.data,
            metadata: e.metadata.into_iter().collect(),
        });
        if let Some(ctx) = &trace {
            crate::trace::set_grpc_metadata(req.metadata_mut(), ctx);
        }
        let answer = AppCallbackClient::new(channel)
            .on_binding_event(req)
            .await
            .map_err(|s| format!("the app answered {:?}: {}", s.code(), s.message()))?
            .into_inner();
        let reply = Reply {
            store: answer.store_name,
            states: answer.states.into_iter().map(SaveItem::from).collect(),
            to: answer.to,
            data: answer.data,
        };
        reply.carry_out(rt, name).await;
        return Ok(());
    }
    let headers = e
        .metadata
        .into_iter()
        .map(|(k, v)| (k, ListStringValue { values: vec![v] }))
        .collect();
    match app
        .call_http(Verb::Post, route, "application/json", e.data.to_vec(), headers)
        .await
    {
        Ok((200..=299, body)) => {
            if let Some(reply) = Reply::from_http(&body) {
                reply.carry_out(rt, name).await;
            }
            Ok(())
        }
        Ok((status, _)) => Err(format!("the app answered {status}")),
        Err(e) => Err(e.message),
    }
}

/// What an app may answer an event with: states to save and output
/// bindings to send data to, as Dapr lets it.
#[derive(Default)]
struct Reply {
    store: String,
    states: Vec<SaveItem>,
    to: Vec<String>,
    data: Bytes,
}

impl Reply {
    /// The JSON answer of an HTTP app (`storeName`, `state`, `to`, `data`),
    /// if it is one.
    fn from_http(body: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let obj = v.as_object()?;
        let states = match obj.get("state") {
            Some(s) => crate::http_api::decode_save(s.to_string().as_bytes(), None).ok()?,
            None => Vec::new(),
        };
        let to = obj
            .get("to")
            .and_then(|t| t.as_array())
            .map(|t| t.iter().filter_map(|n| n.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let data = match obj.get("data") {
            None | Some(serde_json::Value::Null) => Bytes::new(),
            Some(d) => Bytes::from(d.to_string()),
        };
        let store = obj
            .get("storeName")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_string();
        Some(Self {
            store,
            states,
            to,
            data,
        })
    }

    /// Saves the states and sends the data on; failures are logged, the
    /// event having been taken.
    async fn carry_out(self, rt: &Runtime, binding: &str) {
        if !self.store.is_empty()
            && !self.states.is_empty()
            && let Err(e) = rt.save_state(&self.store, self.states).await
        {
            tracing::warn!(%binding, error = %e, "saving the states the app answered with failed");
        }
        for out in &self.to {
            let sent = rt
                .invoke_binding(out, "create".into(), self.data.clone(), Metadata::new())
                .await;
            if let Err(e) = sent {
                tracing::warn!(%binding, to = %out, error = %e, "sending the app's answer on failed");
            }
        }
    }
}

/// The names a gRPC app takes events of (`ListInputBindings`); None for HTTP apps.
async fn grpc_app_bindings(rt: &Runtime) -> Option<Vec<String>> {
    let app = rt.app.as_ref()?;
    let mut client = AppCallbackClient::new(app.grpc_channel()?);
    let call = client.list_input_bindings(app.grpc_request(()));
    Some(
        match tokio::time::timeout(rt.settings.binding_options_timeout, call).await {
            Ok(Ok(r)) => r.into_inner().bindings,
            Ok(Err(s)) if s.code() == Code::Unimplemented => Vec::new(),
            Ok(Err(s)) => {
                tracing::warn!(error = %s.message(), "ListInputBindings failed; no input bindings");
                Vec::new()
            }
            Err(_) => Vec::new(),
        },
    )
}

/// Starts delivering one input binding's events, if the app takes them.
async fn start(
    rt: &Arc<Runtime>,
    name: &str,
    entry: &BindingEntry,
    grpc: Option<&[String]>,
) -> Option<Reading> {
    let wanted = match grpc {
        Some(names) => names.iter().any(|n| n == name),
        None => http_app_wants(rt, &entry.route).await,
    };
    if !wanted {
        tracing::info!(binding = %name, "the app does not take events of this input binding");
        return None;
    }
    match entry
        .binding
        .read(to_app(rt.clone(), name.to_string(), entry.route.clone()))
        .await
    {
        Ok(r) => {
            tracing::info!(binding = %name, route = %entry.route, "input binding delivering to the app");
            Some(r)
        }
        Err(e) => {
            tracing::error!(binding = %name, error = %e, "input binding could not start");
            None
        }
    }
}

fn input_binding(rt: &Runtime, name: &str) -> Option<Arc<BindingEntry>> {
    rt.loaded
        .read()
        .ok()?
        .bindings
        .get(name)
        .filter(|b| b.input)
        .cloned()
}

/// Starts every input binding the app takes events of; they run until the
/// sidecar shuts down, and one replaced while running restarts with the
/// new component.
pub async fn serve_inputs(rt: &Arc<Runtime>) {
    if rt.app.is_none() {
        return;
    }
    // Listening first, so no change made while they start is missed.
    let mut changed = rt.components_changed.subscribe();
    let names: Vec<String> = match rt.loaded.read() {
        Ok(l) => l
            .bindings
            .iter()
            .filter(|(_, b)| b.input)
            .map(|(n, _)| n.clone())
            .collect(),
        Err(_) => return,
    };
    let grpc = grpc_app_bindings(rt).await;
    let mut readings: HashMap<String, Reading> = HashMap::new();
    for name in names {
        if let Some(entry) = input_binding(rt, &name)
            && let Some(r) = start(rt, &name, &entry, grpc.as_deref()).await
        {
            readings.insert(name, r);
        }
    }
    let rt = rt.clone();
    let mut stopping = rt.shutdown.subscribe();
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = stopping.wait_for(|v| *v) => break,
                name = changed.recv() => match name {
                    Ok(name) => name,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                },
            };
            // The old component's reading stops before the new one's starts.
            drop(readings.remove(&name));
            if let Some(entry) = input_binding(&rt, &name)
                && let Some(r) = start(&rt, &name, &entry, grpc.as_deref()).await
            {
                readings.insert(name, r);
            }
        }
        drop(readings);
    });
}
