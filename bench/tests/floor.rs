//! The load generator on its own: its `floor` mode needs no database and no gateway.

use std::process::Command;

/// The load generator's `floor` mode (no database needed): every change reaches every socket,
/// for both server shapes, and the report lands as JSON.
#[test]
fn the_bench_floor_mode_fans_every_change_out_to_every_socket() {
    for shape in [None, Some("--single-writer")] {
        let dir = tempfile::tempdir().expect("temp dir");
        let json = dir.path().join("floor.json");
        let output = Command::new(env!("CARGO_BIN_EXE_statgate-bench"))
            .args(["--json", json.to_str().expect("utf-8 path"), "floor"])
            .args(["--sockets", "25", "--changes", "4", "--pause-ms", "10"])
            .args(shape)
            .output()
            .expect("statgate-bench runs");
        assert!(output.status.success(), "{output:?}");
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).expect("report written"))
                .expect("report is JSON");
        let report = &report["figures"];
        assert_eq!(report["changes_not_delivered_to_all"], 0, "{report}");
        assert_eq!(report["sockets_closed_early"], 0, "{report}");
        assert_eq!(report["last_delivery"]["n"], 4, "{report}");
    }
}
