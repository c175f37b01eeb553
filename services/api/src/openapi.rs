//! The OpenAPI document, generated from the handlers' annotations; served at
//! `/openapi.json` and committed as `proto/openapi.json` (the API's tests compare them).

use axum::Json;
use utoipa::OpenApi;

use crate::{error, feed, model, routes};

/// The API's description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "collections read API",
        description = "Tasks, accounts, journals, the task-event feed and figures for collections dashboards (issue 20). JSON; errors are {error, message, parameter}. When API_TOKEN is set, /v1 and the board need `Authorization: Bearer <token>` (or ?access_token=).",
        version = "1"
    ),
    paths(
        routes::tasks,
        routes::account,
        routes::journal,
        feed::page,
        feed::stream,
        routes::stats,
    ),
    components(schemas(
        error::ErrorBody,
        model::TaskPage,
        model::AccountBody,
        model::JournalItem,
        model::JournalPage,
        model::FeedItem,
        model::FeedPage,
        model::KindCount,
        model::HourCount,
        model::QueueCount,
        model::DeadLetterReason,
        model::Stats,
    ))
)]
pub struct ApiDoc;

/// The document as pretty JSON with a final newline (the committed file's form).
#[must_use]
pub fn pretty() -> String {
    let mut s = ApiDoc::openapi().to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}

/// `GET /openapi.json`.
pub async fn document() -> Json<serde_json::Value> {
    Json(serde_json::to_value(ApiDoc::openapi()).unwrap_or_default())
}
