//! The C ABI from C: the committed header is current, and a C program runs a whole call
//! through it (natively here; under valgrind in `c_call_under_valgrind`, which CI runs).

use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory cargo built this crate's libraries in for this test run
/// (`target/<profile>/deps`, beside this test's executable: `cargo test` builds the
/// staticlib and cdylib there, and copies them up a level only on `cargo build`).
fn artifacts() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().to_path_buf()
}

fn generate_header() -> String {
    let config = cbindgen::Config::from_file(manifest().join("cbindgen.toml")).unwrap();
    let bindings = cbindgen::Builder::new()
        .with_crate(manifest())
        .with_config(config)
        .generate()
        .expect("cbindgen");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn header_is_current() {
    let fresh = generate_header();
    let path = manifest().join("include/sotto.h");
    if std::env::var_os("SOTTO_WRITE_HEADER").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "ffi/include/sotto.h differs from cbindgen's output: regenerate it with \
         `SOTTO_WRITE_HEADER=1 cargo test -p sotto-ffi --test c_api header_is_current`"
    );
}

/// Compiles `tests/c/call.c` against the static library into `name`; returns its path.
/// Each test builds its own executable: tests run in parallel, and executing a file
/// another test is still writing fails with ETXTBSY ("Text file busy").
fn build_c_program(name: &str) -> PathBuf {
    let dir = artifacts();
    let lib = dir.join("libsotto_ffi.a");
    assert!(lib.exists(), "{} not built", lib.display());
    let exe = dir.join(name);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1"])
        .arg("-I")
        .arg(manifest().join("include"))
        .arg(manifest().join("tests/c/call.c"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(status.success(), "the C program does not compile");
    exe
}

fn check_output(output: std::process::Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(output.status.success(), "the C call failed: {stderr}");
    assert!(stdout.contains("c api: ok"), "{stdout}");
}

#[test]
fn a_whole_call_runs_from_c() {
    let exe = build_c_program("sotto_c_call");
    check_output(Command::new(&exe).output().unwrap());
}

/// The same program under valgrind: 0 errors, 0 bytes definitely, indirectly or possibly
/// lost (beyond the suppressed thread-local storage of rayon's pool threads).
/// `cargo test -p sotto-ffi --test c_api -- --ignored` (needs `apt-get install valgrind`;
/// fails, never skips, without it).
#[test]
#[ignore = "needs valgrind; CI runs it"]
fn c_call_under_valgrind() {
    let exe = build_c_program("sotto_c_call_valgrind");
    let output = Command::new("valgrind")
        .args([
            "--error-exitcode=3",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect,possible",
            "--show-leak-kinds=definite,indirect,possible",
        ])
        // Only the thread-local storage of rayon's global pool threads (openmls starts
        // them; they live until exit) is suppressed.
        .arg(format!(
            "--suppressions={}",
            manifest().join("tests/valgrind.supp").display()
        ))
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("valgrind is required for this test: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ERROR SUMMARY: 0 errors"),
        "valgrind reported errors:\n{stderr}"
    );
    assert!(
        stderr.contains("definitely lost: 0 bytes")
            || stderr.contains("All heap blocks were freed"),
        "valgrind reported leaks:\n{stderr}"
    );
    check_output(output);
}

/// The Python example (ctypes only) against the cdylib.
/// `cargo test -p sotto-ffi --test c_api -- --ignored` (needs `python3`; fails without it).
#[test]
#[ignore = "needs python3; CI runs it"]
fn the_python_example_runs() {
    let lib = artifacts().join("libsotto_ffi.so");
    assert!(lib.exists(), "{} not built", lib.display());
    let output = Command::new("python3")
        .arg(manifest().join("examples/python/sotto_demo.py"))
        .arg(&lib)
        .output()
        .unwrap_or_else(|e| panic!("python3 is required for this test: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "python failed: {stderr}");
    assert!(stdout.contains("python: ok"), "{stdout}");
}

/// Status values are part of the ABI: pinned here, so renumbering fails even when the
/// header is regenerated with it.
#[test]
fn status_values_never_change() {
    use sotto_ffi::SottoStatus::*;
    let pinned = [
        (SOTTO_OK, 0),
        (SOTTO_NULL_POINTER, 1),
        (SOTTO_MISALIGNED, 2),
        (SOTTO_WRONG_HANDLE, 3),
        (SOTTO_CONSUMED, 4),
        (SOTTO_BUFFER_TOO_SMALL, 5),
        (SOTTO_INVALID_ARGUMENT, 6),
        (SOTTO_PANIC, 7),
        (SOTTO_EMPTY, 8),
        (SOTTO_POISONED, 9),
        (SOTTO_REJECTED, 20),
        (SOTTO_INVALID_KEY_PACKAGE, 21),
        (SOTTO_NOT_A_MEMBER, 22),
        (SOTTO_COMMIT_PENDING, 23),
        (SOTTO_NO_PENDING_COMMIT, 24),
        (SOTTO_NO_SUCH_MEMBER, 25),
        (SOTTO_ROOM_ERROR, 29),
        (SOTTO_AUTHENTICATION_FAILED, 30),
        (SOTTO_REPLAYED, 31),
        (SOTTO_UNKNOWN_KEY, 32),
        (SOTTO_MALFORMED_FRAME, 33),
        (SOTTO_NO_SENDING_KEY, 34),
        (SOTTO_MEDIA_ERROR, 39),
        (SOTTO_CALL_ERROR, 40),
    ];
    for (status, value) in pinned {
        assert_eq!(status as i32, value, "{status:?}");
    }
}
