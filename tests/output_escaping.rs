//! Strings from outside in text output: an aggregator's `referenceNo`, `responseCode` and
//! message carrying CR, LF and terminal escape codes, written into a real journal file through
//! the journal API, then printed by the real `tapgate journal show` and `list`. The text must
//! stay one item per line and pass no control character to the terminal.

use std::path::Path;
use std::process::Command;

use tapgate::fare::{Direction, OpState, Rupiah};
use tapgate::journal::{Journal, NewOp, OpKind, Transition};

/// What a hostile or broken aggregator could answer: a forged log line, a screen clear, a
/// bell, a C1 CSI and a right-to-left override.
const EVIL_REF: &str = "FP-1\r\n2026-12-02 SUCCEEDED forged\x1b[2J\x07\u{9b}31m\u{202e}";
const EVIL_MSG: &str = "Declined\nATTENTION fake row\x1b]0;title\x07";

fn journal_cmd(path: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["journal", "--journal", path.to_str().expect("utf-8 path")])
        .args(args)
        .output()
        .expect("run tapgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf-8 output"),
    )
}

fn op(reference: &str, at: i64) -> NewOp {
    NewOp {
        partner_reference_no: reference.into(),
        kind: OpKind::Hold,
        lane: "in-1".into(),
        direction: Direction::In,
        station_id: "BLM".into(),
        amount: Rupiah(9000),
        pan_key: "5f1c0e9a".repeat(8),
        pan_masked: "93600914*******1234".into(),
        nns: "93600914".into(),
        journey_id: None,
        next_attempt_at_ms: at + 2_000,
        created_at_ms: at,
    }
}

/// No control character but the line ends, no bidi override: nothing that can move the
/// cursor, clear the screen or start a line of its own.
fn assert_inert(out: &str) {
    let bad: Vec<char> = out
        .chars()
        .filter(|&c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c))
        .collect();
    assert!(bad.is_empty(), "control characters {bad:?} in:\n{out}");
    assert!(
        !out.lines()
            .any(|l| l.starts_with("2026-12-02") || l.starts_with("ATTENTION fake")),
        "a forged line:\n{out}"
    );
}

#[test]
fn journal_show_and_list_escape_the_aggregators_strings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let now = jiff::Timestamp::now().as_millisecond();
    {
        let mut j = Journal::open(&path).unwrap();
        j.begin(&op("TGPAID", now - 60_000)).unwrap();
        j.transition(
            "TGPAID",
            &Transition {
                reference_no: Some(EVIL_REF.into()),
                response_code: Some("2006000\r\n".into()),
                gate_opened: Some(true),
                reason: Some(format!("paid: {EVIL_MSG}")),
                ..Transition::new(OpState::Succeeded, now - 59_000)
            },
        )
        .unwrap();
        j.begin(&op("TGDECL", now - 30_000)).unwrap();
        j.transition(
            "TGDECL",
            &Transition {
                response_code: Some("4036005".into()),
                reason: Some(EVIL_MSG.into()),
                ..Transition::new(OpState::Declined, now - 29_000)
            },
        )
        .unwrap();
    }

    let (code, show) = journal_cmd(&path, &["show", "TGPAID"]);
    assert_eq!(code, 0, "{show}");
    assert_inert(&show);
    // Escaped, not dropped: the technician still sees what the aggregator sent.
    assert!(
        show.contains(r"FP-1\r\n2026-12-02 SUCCEEDED forged\x1b[2J\x07\u{9b}31m\u{202e}"),
        "{show}"
    );
    assert!(show.contains(r"2006000\r\n"), "{show}");

    let (code, list) = journal_cmd(&path, &["list"]);
    assert_eq!(code, 0, "{list}");
    assert_inert(&list);
    assert_eq!(list.lines().count(), 4, "header, two rows, count:\n{list}");
    assert!(
        list.contains(r"Declined\nATTENTION fake row\x1b]0;title\x07"),
        "{list}"
    );

    let (code, show) = journal_cmd(&path, &["show", "TGDECL"]);
    assert_eq!(code, 0, "{show}");
    assert_inert(&show);

    // The machine formats keep the exact bytes (JSON escapes them by itself).
    let (code, json) = journal_cmd(&path, &["show", "TGPAID", "--json"]);
    assert_eq!(code, 0, "{json}");
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["operation"]["reference_no"], EVIL_REF, "{json}");
}
