//! MISP's REST API as the push worker speaks it: view, add or edit an event, upload a
//! STIX bundle; each answer classified as done, retryable or refused, with MISP's own
//! message quoted (bounded and escaped) and the advice that fits.

use super::*;

/// One attempt at pushing `item`.
pub(super) fn push(s: &PushSettings, item: &PushItem) -> Result<Pushed, PushFailure> {
    match item {
        PushItem::Event {
            uuid,
            timestamp,
            body,
        } => push_event(s, uuid, *timestamp, body),
        PushItem::Stix { path } => {
            let body = std::fs::read(path).map_err(|e| PushFailure {
                status: None,
                reason: format!(
                    "cannot read the delivered bundle {}: {e}",
                    gapferry_common::name::escape(&path.to_string_lossy())
                ),
                retry: false,
            })?;
            let answer = call(s, "POST", &s.stix_path, Some(&body))?;
            match answer.status {
                200..=299 => Ok(Pushed::Added),
                403 if answer.text.contains("same UUID already exists") => Ok(Pushed::Unchanged),
                _ => Err(refused(&answer, "upload_stix")),
            }
        }
    }
}

pub(super) fn push_event(
    s: &PushSettings,
    uuid: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<Pushed, PushFailure> {
    if !is_uuid(uuid) {
        return Err(PushFailure {
            status: None,
            reason: format!(
                "the event's uuid {:?} is not a uuid",
                gapferry_common::name::escape(uuid)
            ),
            retry: false,
        });
    }
    let view = call(s, "GET", &format!("/events/view/{uuid}"), None)?;
    let edit = match view.status {
        404 => false,
        200..=299 => match view.view.unwrap_or(Ok(None)) {
            Ok(Some(theirs)) if theirs >= timestamp => return Ok(Pushed::Unchanged),
            Ok(_) => true,
            Err(why) => {
                return Err(PushFailure {
                    status: Some(view.status),
                    reason: format!(
                        "view: the answer is not a MISP event ({}); check that [misp_push] url is MISP's base URL",
                        gapferry_common::name::escape(&why)
                    ),
                    retry: false,
                })
            }
        },
        _ => return Err(refused(&view, "view")),
    };
    if !edit {
        let add = call(s, "POST", "/events/add", Some(body))?;
        match add.status {
            200..=299 => return Ok(Pushed::Added),
            // MISP (or its feed fetch) added it meanwhile: 404 in MISP 2.4/2.5, 403 before.
            400..=499 if add.text.contains("already exists") => {}
            _ => return Err(refused(&add, "add")),
        }
    }
    let edited = call(s, "POST", &format!("/events/edit/{uuid}"), Some(body))?;
    match edited.status {
        200..=299 => Ok(Pushed::Edited),
        403 if edited.text.contains("not newer than the local copy") => Ok(Pushed::Unchanged),
        // Deleted in MISP between the view and the edit: the next attempt adds it.
        404 => Err(PushFailure {
            status: Some(404),
            reason: "MISP lost the event between looking it up and editing it".into(),
            retry: true,
        }),
        _ => Err(refused(&edited, "edit")),
    }
}

/// Whether `s` is a uuid in its 8-4-4-4-12 hex form (it goes into a URL path).
pub(super) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// MISP's answer to one call.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    /// The top of the body of an answer that is not a success.
    pub(super) text: String,
    /// A successful view's `Event.timestamp`, or why it is not an event.
    pub(super) view: Option<Result<Option<i64>, String>>,
    pub(super) location: Option<String>,
}

pub(super) fn call(
    s: &PushSettings,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Answer, PushFailure> {
    let url = format!("{}{path}", s.base);
    let result = match body {
        None => s
            .agent
            .get(&url)
            .header("Authorization", &s.key)
            .header("Accept", "application/json")
            .call(),
        Some(b) => {
            debug_assert_eq!(method, "POST");
            s.agent
                .post(&url)
                .header("Authorization", &s.key)
                .header("Accept", "application/json")
                .header("Content-Type", "application/json")
                .send(b)
        }
    };
    let mut response = result.map_err(|e| transport(&s.base, e))?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut answer = Answer {
        status,
        text: String::new(),
        view: None,
        location,
    };
    let success = (200..300).contains(&status);
    if success && body.is_none() {
        let reader = response.body_mut().with_config().limit(MAX_VIEW).reader();
        answer.view = Some(view_timestamp(reader));
    } else if !success {
        let mut top = Vec::new();
        response
            .body_mut()
            .as_reader()
            .take(MAX_ANSWER)
            .read_to_end(&mut top)
            .map_err(|e| transport(&s.base, ureq::Error::Io(e)))?;
        answer.text = String::from_utf8_lossy(&top).into_owned();
    }
    Ok(answer)
}

pub(super) fn transport(base: &str, e: ureq::Error) -> PushFailure {
    let text = e.to_string().to_ascii_lowercase();
    // rustls' refusals (an unknown issuer, a name mismatch) reach here as I/O errors.
    let tls = text.contains("certificate") || text.contains("tls") || text.contains("handshake");
    let advice = match &e {
        _ if tls => "TLS failed; check that [misp_push] ca_file holds the CA that signed MISP's certificate and that the url's host name is in it",
        ureq::Error::Timeout(_) => "MISP did not answer in time; check that it is up and not overloaded, or raise [misp_push] timeout",
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => "nothing listens there; check [misp_push] url and that MISP is up",
        ureq::Error::HostNotFound => "the host name does not resolve; check [misp_push] url",
        _ => "check [misp_push] url and that MISP is up",
    };
    PushFailure {
        status: None,
        reason: format!("cannot reach MISP at {base}: {e}; {advice}"),
        retry: true,
    }
}

/// The failure for an answer that is not what `step` expects.
pub(super) fn refused(a: &Answer, step: &str) -> PushFailure {
    let message = misp_message(&a.text);
    let (advice, retry) = match a.status {
        401 | 403 if message.contains("Authentication failed") || a.status == 401 => (
            "MISP refused the API key: write the automation key of an enabled MISP user with API access into [misp_push] key_file (Administration > List Auth Keys; check that the key has not expired and allows this host's address), then restart the receiver",
            false,
        ),
        403 => (
            "the key's MISP user may not do this: give it a role that may add and modify events (e.g. Org Admin or Sync user) in an organisation that may edit them",
            false,
        ),
        300..=399 => (
            "MISP redirected the call; set [misp_push] url to the exact base URL MISP answers on (https://, host, and MISP's baseurl)",
            false,
        ),
        408 | 429 => ("MISP is busy; trying again later", true),
        500..=599 => ("MISP failed; trying again later (MISP's error log says why)", true),
        _ => ("MISP refused the request", false),
    };
    let location = a
        .location
        .as_deref()
        .filter(|_| (300..400).contains(&a.status))
        .map(|l| format!(" to {}", gapferry_common::name::escape(l)))
        .unwrap_or_default();
    PushFailure {
        status: Some(a.status),
        reason: format!(
            "{step}: MISP answered HTTP {}{location}{}; {advice}",
            a.status,
            if message.is_empty() {
                String::new()
            } else {
                format!(" ({})", gapferry_common::name::escape(&message))
            }
        ),
        retry,
    }
}

/// MISP's error message in an answer (`message`, `errors`), or its first bytes.
pub(super) fn misp_message(text: &str) -> String {
    let mut m = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => {
            let mut parts = Vec::new();
            for key in ["message", "errors"] {
                match &v[key] {
                    serde_json::Value::Null => {}
                    serde_json::Value::String(s) => parts.push(s.clone()),
                    other => parts.push(other.to_string()),
                }
            }
            parts.join(": ")
        }
        Err(_) => text.trim().to_string(),
    };
    if m.len() > QUOTED {
        let mut cut = QUOTED;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m += "…";
    }
    m
}

/// `Event.timestamp` of a view answer (a string or a number in MISP's JSON), read as it
/// streams (the rest of the event is skipped, not held); `Err` says why the answer is not
/// an event at all.
pub(super) fn view_timestamp(answer: impl std::io::Read) -> Result<Option<i64>, String> {
    #[derive(Deserialize)]
    struct View {
        #[serde(rename = "Event")]
        event: ViewEvent,
    }
    #[derive(Deserialize)]
    struct ViewEvent {
        timestamp: Option<serde_json::Value>,
    }
    let v: View = serde_json::from_reader(std::io::BufReader::new(answer))
        .map_err(|e| format!("not JSON with an Event: {e}"))?;
    Ok(match v.event.timestamp {
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        _ => None,
    })
}
