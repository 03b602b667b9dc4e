//! The semantic check: every key's value against what the daemon, the SNAP client, the HTTP
//! stack, the metrics endpoint and the journal accept, returning the dotted key path of the
//! first problem and what to do about it. The file system is consulted by `load.rs`, never
//! here.

use std::path::Path;

use super::{resolve_time_zone, CardSourceConfig, Config, RelayConfig, MIN_RECONCILER_INTERVAL_MS};

impl Config {
    /// Semantic checks of every key: returns (key path, message) for the first problem.
    /// Anything the daemon, the SNAP client, the HTTP stack, the metrics endpoint or the
    /// journal would refuse at start is refused here first.
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        self.check_station()?;
        self.check_lanes()?;
        self.check_inputs()?;
        self.check_tariff()?;
        self.check_policy()?;
        self.check_journal()?;
        self.check_aggregator()?;
        self.check_metrics()?;
        self.check_reconciler()?;
        self.check_journeys()?;
        self.check_display()?;
        self.check_qr()
    }

    fn check_station(&self) -> Result<(), (String, String)> {
        let s = &self.station;
        if s.id.is_empty() || s.id.len() > 16 || !s.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(("station.id".into(), "must be 1-16 letters or digits".into()));
        }
        text_value("station.name", &s.name, 128)?;
        if !(-90.0..=90.0).contains(&s.latitude) {
            return Err(("station.latitude".into(), "must be within -90..90".into()));
        }
        if !(-180.0..=180.0).contains(&s.longitude) {
            return Err((
                "station.longitude".into(),
                "must be within -180..180".into(),
            ));
        }
        resolve_time_zone(&s.timezone).map_err(|e| ("station.timezone".to_string(), e))?;
        Ok(())
    }

    fn check_lanes(&self) -> Result<(), (String, String)> {
        if self.lanes.is_empty() {
            return Err(("lane".into(), "at least one [[lane]] is needed".into()));
        }
        for (i, lane) in self.lanes.iter().enumerate() {
            let k = |key: &str| format!("lane[{i}].{key}");
            if lane.name.is_empty()
                || lane.name.len() > 32
                || !lane
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err((k("name"), "must be 1-32 letters, digits, - or _".into()));
            }
            if self.lanes[..i].iter().any(|l| l.name == lane.name) {
                return Err((k("name"), format!("lane {:?} is defined twice", lane.name)));
            }
            if let Some(id) = &lane.device_id {
                header_value(&k("device_id"), id, 64)?;
            }
            // The default device id goes in a header too.
            header_value(&k("name"), &lane.device_id(&self.station), 64)?;
            match &lane.relay {
                RelayConfig::Gpio(spec) => check_gpio_relay(&k("relay"), spec)?,
                RelayConfig::Recording if !self.station.bench => {
                    return Err((
                        k("relay"),
                        format!(
                            "lane {:?} has the recording relay (the default when `relay` is \
                             absent): it takes fares and drives no gate. Give it a gpio relay, \
                             or, on a bench or certification rig only, set `bench = true` in \
                             [station]",
                            lane.name
                        ),
                    ));
                }
                RelayConfig::Recording => {}
            }
            if let CardSourceConfig::Pcsc {
                reader,
                tap_deadline_ms,
                ..
            } = &lane.card_source
            {
                if reader.trim().is_empty() {
                    return Err((k("card_source.reader"), "reader pattern is empty".into()));
                }
                text_value(&k("card_source.reader"), reader, 256)?;
                in_range(
                    &k("card_source.tap_deadline_ms"),
                    *tap_deadline_ms,
                    100..=30_000,
                )?;
            }
        }
        Ok(())
    }

    fn check_inputs(&self) -> Result<(), (String, String)> {
        for (i, input) in self.inputs.iter().enumerate() {
            let k = |key: &str| format!("input[{i}].{key}");
            if let Some(lane) = &input.lane {
                if self.lane(lane).is_none() {
                    return Err((k("lane"), format!("no [[lane]] named {lane:?}")));
                }
            }
            in_range(&k("debounce_ms"), input.debounce_ms, 0..=1000)?;
            if let Err(e) = input.validate() {
                let key = if input.role == crate::relay::inputs::InputRole::Passage
                    && input.lane.is_none()
                {
                    "lane"
                } else {
                    line_key(input.line.is_some(), input.chip.is_some())
                };
                return Err((k(key), e.to_string()));
            }
        }
        Ok(())
    }

    /// The tariff's own rules live with it in the fare core; here they get their `tariff.` key.
    fn check_tariff(&self) -> Result<(), (String, String)> {
        self.tariff
            .check(&self.station.id)
            .map_err(|e| (format!("tariff.{}", e.key), e.message))
    }

    fn check_policy(&self) -> Result<(), (String, String)> {
        let p = &self.policy;
        in_range(
            "policy.decision_deadline_ms",
            p.decision_deadline_ms,
            100..=30_000,
        )?;
        in_range("policy.debounce_ms", p.debounce_ms, 0..=600_000)?;
        in_range("policy.max_trip_minutes", p.max_trip_minutes, 1..=43_200)?;
        in_range(
            "policy.passage_window_ms",
            p.passage_window_ms,
            100..=600_000,
        )?;
        self.check_fast_open()
    }

    fn check_fast_open(&self) -> Result<(), (String, String)> {
        let f = &self.policy.fast_open;
        let k = |key: &str| format!("policy.fast_open.{key}");
        in_range(&k("wait_ms"), f.wait_ms, 10..=10_000)?;
        if f.wait_ms >= self.policy.decision_deadline_ms {
            return Err((
                k("wait_ms"),
                format!(
                    "must be shorter than policy.decision_deadline_ms ({} ms): fast open \
                     decides before the deadline, or it is strict mode",
                    self.policy.decision_deadline_ms
                ),
            ));
        }
        in_range(&k("exposure_cap"), f.exposure_cap, 1..=1_000_000_000)?;
        in_range(
            &k("degraded_after_ms"),
            f.degraded_after_ms,
            100..=3_600_000,
        )?;
        for (i, nns) in f.issuers.iter().enumerate() {
            if nns.len() != 8 || !nns.bytes().all(|b| b.is_ascii_digit()) {
                return Err((
                    format!("policy.fast_open.issuers[{i}]"),
                    format!(
                        "{nns:?} is not an NNS: an issuer is named by the 8 digits its PANs \
                         start with (93600009 is Bank Mandiri)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_journal(&self) -> Result<(), (String, String)> {
        let j = &self.journal;
        path_value("journal.path", &j.path)?;
        if j.path.file_name().is_none() || j.path.as_os_str().to_string_lossy().ends_with('/') {
            return Err((
                "journal.path".into(),
                "must name a file (e.g. /var/lib/tapgate/journal.db)".into(),
            ));
        }
        if let Some(k) = &j.passenger_key_file {
            path_value("journal.passenger_key_file", k)?;
        }
        Ok(())
    }

    fn check_aggregator(&self) -> Result<(), (String, String)> {
        let a = &self.aggregator;
        check_base_url(&a.base_url).map_err(|m| ("aggregator.base_url".to_string(), m))?;
        for (key, v) in [
            ("aggregator.client_id", &a.client_id),
            ("aggregator.partner_id", &a.partner_id),
            ("aggregator.channel_id", &a.channel_id),
        ] {
            header_value(key, v, 256)?;
        }
        text_value("aggregator.merchant_id", &a.merchant_id, 64)?;
        if let Some(v) = &a.sub_merchant_id {
            text_value("aggregator.sub_merchant_id", v, 64)?;
        }
        if let Some(v) = &a.terminal_id {
            text_value("aggregator.terminal_id", v, 64)?;
        }
        if let Some(v) = &a.origin {
            header_value("aggregator.origin", v, 256)?;
        }
        if a.device_ip.parse::<std::net::IpAddr>().is_err() {
            return Err((
                "aggregator.device_ip".into(),
                format!("{:?} is not an IP address", a.device_ip),
            ));
        }
        path_value("aggregator.client_secret_file", &a.client_secret_file)?;
        path_value("aggregator.private_key_file", &a.private_key_file)?;
        in_range(
            "aggregator.connect_timeout_ms",
            a.connect_timeout_ms,
            1..=60_000,
        )?;
        in_range(
            "aggregator.request_timeout_ms",
            a.request_timeout_ms,
            1..=600_000,
        )?;
        if a.connect_timeout_ms >= a.request_timeout_ms {
            return Err((
                "aggregator.connect_timeout_ms".into(),
                "must be shorter than request_timeout_ms (a slow connect would count as an unknown outcome)".into(),
            ));
        }
        in_range(
            "aggregator.max_body_bytes",
            a.max_body_bytes as u64,
            1024..=16 * 1024 * 1024,
        )?;
        in_range(
            "aggregator.pool_idle_timeout_ms",
            a.pool_idle_timeout_ms,
            1_000..=600_000,
        )?;
        if a.keep_warm_ms != 0 {
            in_range(
                "aggregator.keep_warm_ms",
                a.keep_warm_ms,
                100..=a.pool_idle_timeout_ms / 2,
            )
            .map_err(|(k, m)| {
                (
                    k,
                    format!("{m} (0 turns it off; at most half of pool_idle_timeout_ms)"),
                )
            })?;
        }
        for (key, v) in [
            ("aggregator.token_path", &a.token_path),
            ("aggregator.payment_path", &a.payment_path),
            ("aggregator.query_path", &a.query_path),
            ("aggregator.refund_path", &a.refund_path),
            ("aggregator.mpm_generate_path", &a.mpm_generate_path),
            ("aggregator.mpm_query_path", &a.mpm_query_path),
            ("aggregator.mpm_refund_path", &a.mpm_refund_path),
        ] {
            let ok = v.starts_with('/')
                && !v.contains(['?', '#'])
                && v.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err((
                    key.into(),
                    "must start with / and hold no query, fragment, spaces or non-ASCII \
                     characters"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    fn check_metrics(&self) -> Result<(), (String, String)> {
        if let Some(listen) = &self.metrics.listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                return Err((
                    "metrics.listen".into(),
                    format!("{listen:?} is not an address:port such as 127.0.0.1:9464"),
                ));
            }
        }
        Ok(())
    }

    fn check_reconciler(&self) -> Result<(), (String, String)> {
        let r = &self.reconciler;
        in_range(
            "reconciler.interval_ms",
            r.interval_ms,
            MIN_RECONCILER_INTERVAL_MS..=60_000,
        )?;
        in_range(
            "reconciler.backoff_base_ms",
            r.backoff_base_ms,
            1..=3_600_000,
        )?;
        in_range(
            "reconciler.backoff_cap_ms",
            r.backoff_cap_ms,
            r.backoff_base_ms..=86_400_000,
        )?;
        in_range("reconciler.max_attempts", r.max_attempts.into(), 1..=10_000)?;
        in_range(
            "reconciler.attention_after_minutes",
            r.attention_after_minutes,
            1..=525_600,
        )?;
        in_range(
            "reconciler.not_found_after_seconds",
            r.not_found_after_seconds,
            0..=604_800,
        )?;
        Ok(())
    }
}

impl Config {
    fn check_journeys(&self) -> Result<(), (String, String)> {
        let j = &self.journeys;
        let k = |key: &str| format!("journeys.{key}");
        if !j.is_line() {
            if let Some(key) = j.postgres_keys_written().next() {
                return Err((
                    k(key),
                    "is only used with store = \"postgres\": add store = \"postgres\" to                      [journeys] to match journeys line-wide, or remove the key (store                      \"local\", the default, matches them at this station only)"
                        .into(),
                ));
            }
            return Ok(());
        }
        let Some(url) = &j.url else {
            return Err((
                k("url"),
                "store = \"postgres\" needs url: the line database, e.g.                  url = \"postgresql://tapgate@line1-db.example:5432/tapgate\" (no password in                  it: that goes in password_file)"
                    .into(),
            ));
        };
        if let Some(p) = &j.password_file {
            path_value(&k("password_file"), p)?;
        }
        if let Some(p) = &j.ca_file {
            path_value(&k("ca_file"), p)?;
        }
        in_range(&k("lookup_timeout_ms"), j.lookup_timeout_ms, 1..=1_000)?;
        if j.lookup_timeout_ms >= self.policy.decision_deadline_ms {
            return Err((
                k("lookup_timeout_ms"),
                format!(
                    "must be shorter than policy.decision_deadline_ms ({} ms): the exit's \
                     lookup comes out of the gate's decision budget, before the payment",
                    self.policy.decision_deadline_ms
                ),
            ));
        }
        in_range(
            &k("background_timeout_ms"),
            j.background_timeout_ms,
            1..=600_000,
        )?;
        in_range(&k("connect_timeout_ms"), j.connect_timeout_ms, 1..=60_000)?;
        in_range(&k("pool_size"), j.pool_size as u64, 1..=32)?;
        in_range(
            &k("replicate_interval_ms"),
            j.replicate_interval_ms,
            MIN_RECONCILER_INTERVAL_MS..=60_000,
        )?;
        if let Some(days) = j.retain_days {
            in_range(&k("retain_days"), days.into(), 1..=3_650)?;
        }
        in_range(&k("converge_hours"), j.converge_hours, 1..=720)?;
        // The line store's own rules (no password in the url, a user and a host, TLS to
        // anything off this machine), with files left out: they are checked at load. Its
        // messages name the option, never echo the url (which may carry a password).
        let mut settings = j
            .line_settings(&self.station.id)
            .unwrap_or_else(|| crate::line::LineSettings::new(url.clone(), &self.station.id));
        settings.password_file = None;
        settings.ca_file = None;
        if let Err(e) = crate::line::connection(&settings) {
            let message = match e {
                crate::line::LineError::Config(m) => m,
                other => other.to_string(),
            };
            return Err((k("url"), message));
        }
        Ok(())
    }
}

impl Config {
    fn check_qr(&self) -> Result<(), (String, String)> {
        let Some(q) = &self.qr else {
            return Ok(());
        };
        if self.display.is_none() {
            return Err((
                "qr".into(),
                "a QR is shown on the passenger display and asked for there: configure [display] too"
                    .into(),
            ));
        }
        if q.lanes.is_empty() {
            return Err((
                "qr.lanes".into(),
                "name at least one exit lane (or remove [qr])".into(),
            ));
        }
        for (i, name) in q.lanes.iter().enumerate() {
            let key = format!("qr.lanes[{i}]");
            let Some(lane) = self.lane(name) else {
                return Err((key, format!("no [[lane]] named {name:?}")));
            };
            let flat = matches!(self.tariff, crate::fare::TariffConfig::Flat { .. });
            if lane.direction == crate::fare::Direction::In && !flat {
                return Err((
                    key,
                    format!(
                        "lane {name:?} is an entry on a fare matrix, where the fare is not known \
                         without a tap: a QR is offered at exits, and at entries of a flat tariff"
                    ),
                ));
            }
            if q.lanes[..i].contains(name) {
                return Err((key, format!("lane {name:?} is listed twice")));
            }
        }
        in_range("qr.validity_seconds", q.validity_seconds, 30..=900)?;
        in_range("qr.poll_ms", q.poll_ms, 250..=10_000)?;
        in_range(
            "qr.late_payment_seconds",
            q.late_payment_seconds,
            30..=86_400,
        )?;
        let p = &q.notify_path;
        let ok = p.starts_with('/')
            && p.len() > 1
            && !p.starts_with("/lane/")
            && !p.starts_with("/gate/")
            && !p.contains(['?', '#'])
            && p.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err((
                "qr.notify_path".into(),
                "must start with /, not be / or under /lane/ or /gate/ (the pages' paths), and hold no query, fragment, spaces or non-ASCII characters"
                    .into(),
            ));
        }
        if let Some(url) = &q.callback_url {
            let ok = (url.starts_with("https://") || url.starts_with("http://"))
                && url.len() <= 512
                && url.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err((
                    "qr.callback_url".into(),
                    "must be an http:// or https:// URL of at most 512 characters".into(),
                ));
            }
        }
        Ok(())
    }

    fn check_display(&self) -> Result<(), (String, String)> {
        let Some(d) = &self.display else {
            return Ok(());
        };
        let addr: std::net::SocketAddr = d.listen.parse().map_err(|_| {
            (
                "display.listen".to_string(),
                format!(
                    "{:?} is not an address:port such as 127.0.0.1:8700",
                    d.listen
                ),
            )
        })?;
        if !addr.ip().is_loopback() && !d.allow_remote {
            return Err((
                "display.listen".into(),
                format!(
                    "{addr} is reachable from other machines, and the pages show what each \
                     passenger is told as it happens: listen on 127.0.0.1 (the kiosk browser \
                     runs on this controller), or set allow_remote = true for a screen driven \
                     by another computer, behind a firewall"
                ),
            ));
        }
        in_range("display.idle_after_ms", d.idle_after_ms, 1_000..=60_000)?;
        for (i, g) in d.gates.iter().enumerate() {
            let k = |key: &str| format!("display.gate[{i}].{key}");
            if g.name.is_empty()
                || g.name.len() > 32
                || !g
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err((k("name"), "must be 1-32 letters, digits, - or _".into()));
            }
            if d.gates[..i].iter().any(|o| o.name == g.name) {
                return Err((k("name"), format!("gate {:?} is defined twice", g.name)));
            }
            if g.lanes.len() != 2 {
                return Err((
                    k("lanes"),
                    format!(
                        "a gate page shows the two lanes of one gate ({} given); one lane has \
                         its own page, /lane/<name>",
                        g.lanes.len()
                    ),
                ));
            }
            for (j, lane) in g.lanes.iter().enumerate() {
                let key = format!("display.gate[{i}].lanes[{j}]");
                if self.lane(lane).is_none() {
                    return Err((key, format!("no [[lane]] named {lane:?}")));
                }
                if g.lanes[..j].contains(lane) {
                    return Err((key, format!("lane {lane:?} is listed twice")));
                }
                if let Some(other) = d.gates[..i].iter().find(|o| o.lanes.contains(lane)) {
                    return Err((
                        key,
                        format!("lane {lane:?} is already on gate {:?}", other.name),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `key` must lie in `range`.
fn in_range(
    key: &str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<(), (String, String)> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err((
            key.into(),
            format!("{value} is outside {}..={}", range.start(), range.end()),
        ))
    }
}

/// Free text that ends up in logs and request bodies: not empty, no control characters.
fn text_value(key: &str, v: &str, max: usize) -> Result<(), (String, String)> {
    if v.trim().is_empty() {
        return Err((key.into(), "must not be empty".into()));
    }
    if v.chars().any(char::is_control) {
        return Err((
            key.into(),
            "must not hold control characters (CR, LF, tab, escape)".into(),
        ));
    }
    if v.len() > max {
        return Err((key.into(), format!("is longer than {max} bytes")));
    }
    Ok(())
}

/// A value sent as an HTTP header: what the HTTP stack would refuse when building the
/// request (CR, LF and other control characters), refused here instead.
fn header_value(key: &str, v: &str, max: usize) -> Result<(), (String, String)> {
    text_value(key, v, max)?;
    if reqwest::header::HeaderValue::from_str(v).is_err() || !v.is_ascii() {
        return Err((
            key.into(),
            "is sent as an HTTP header: printable ASCII only".into(),
        ));
    }
    Ok(())
}

/// A file path: not empty, no NUL or line breaks (which only ever come from a mangled edit).
fn path_value(key: &str, p: &Path) -> Result<(), (String, String)> {
    let s = p.as_os_str().to_string_lossy();
    if s.trim().is_empty() {
        return Err((key.into(), "must not be empty".into()));
    }
    if s.chars().any(char::is_control) {
        return Err((key.into(), "must not hold control characters".into()));
    }
    Ok(())
}

/// `base_url`: `https://host[:port]` with nothing else; plain http only to this machine (the
/// simulator), because the access token and every signed payment would cross the network in
/// clear text.
pub fn check_base_url(base_url: &str) -> Result<(), String> {
    let shape = "must be https://host[:port] with no path, query or fragment (paths go in the \
                 *_path keys)";
    let url = url::Url::parse(base_url).map_err(|e| format!("{e}: {shape}"))?;
    let host = match url.host() {
        Some(h) if matches!(url.scheme(), "https" | "http") => h,
        _ => return Err(shape.into()),
    };
    let bare = url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none()
        && !base_url.trim_end_matches('/').ends_with('?');
    if !bare || base_url.trim_end_matches('/').matches('/').count() > 2 {
        return Err(shape.into());
    }
    if url.scheme() == "http" {
        let loopback = match host {
            url::Host::Ipv4(ip) => ip.is_loopback(),
            url::Host::Ipv6(ip) => ip.is_loopback(),
            url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        };
        if !loopback {
            return Err(format!(
                "plain http to {host} would send the access token and signed payments in clear \
                 text: use https (http is accepted only to 127.0.0.1, ::1 or localhost, for the \
                 simulator)"
            ));
        }
    }
    Ok(())
}

/// The key a GPIO line reference error is about.
fn line_key(has_line: bool, has_chip: bool) -> &'static str {
    match (has_line, has_chip) {
        (false, true) => "offset",
        _ => "line",
    }
}

/// A gpio relay's keys, each named on its own.
fn check_gpio_relay(
    at: &str,
    spec: &crate::relay::gpio::GpioRelaySpec,
) -> Result<(), (String, String)> {
    in_range(&format!("{at}.pulse_ms"), spec.pulse_ms, 20..=5_000)?;
    in_range(&format!("{at}.gap_ms"), spec.gap_ms, 20..=2_000)?;
    in_range(
        &format!("{at}.hold_timeout_ms"),
        spec.hold_timeout_ms,
        500..=60_000,
    )?;
    spec.validate().map_err(|e| {
        (
            format!(
                "{at}.{}",
                line_key(spec.line.is_some(), spec.chip.is_some())
            ),
            e.to_string(),
        )
    })
}
