//! The other end of the bare baselines: this same binary, started again
//! in a helper mode (the first argument starts with `__`), so that each
//! baseline runs between two processes as corral's own figures do.

use anyhow::{Context, Result, bail};
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::{UnixListener, UnixStream};

/// Runs the helper named by `args[0]` and exits; returns if `args` names
/// no helper.
pub fn dispatch(args: &[String]) {
    let Some(mode) = args.first() else { return };
    let result = match mode.as_str() {
        "__echo" => echo(&args[1..]),
        "__rr-server" => rr_server(&args[1..]),
        "__exec-in-cgroup" => exec_in_cgroup(&args[1..]),
        "__seccomp-install" => crate::seccomp::install_helper(),
        "__soak-hostile" => crate::soak::hostile_helper(&args[1..]),
        "__soak-clients" => crate::soak::clients_helper(&args[1..]),
        _ => return,
    };
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("corral-benches {mode}: {e:#}");
            std::process::exit(1)
        }
    }
}

/// `__echo [CPU]`: sends back whatever arrives on fd 3 until it closes.
fn echo(args: &[String]) -> Result<()> {
    if let Some(cpu) = args.first() {
        crate::bare::pin_to_cpu(cpu.parse().context("CPU number")?)?;
    }
    // SAFETY: fd 3 was handed to us by the parent for this purpose and
    // nothing else in this process uses it.
    let mut channel = unsafe { UnixStream::from_raw_fd(3) };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match channel.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        channel.write_all(&buf[..n])?;
    }
}

/// `__rr-server SOCKET REQUEST_BYTES RESPONSE_BYTES`: a request/response
/// server with a thread per connection: reads a request of the given
/// size, answers with a response of the given size.
fn rr_server(args: &[String]) -> Result<()> {
    let [path, request, response] = args else {
        bail!("usage: __rr-server SOCKET REQUEST_BYTES RESPONSE_BYTES");
    };
    let request: usize = request.parse().context("request size")?;
    let response: usize = response.parse().context("response size")?;
    let listener = UnixListener::bind(path).with_context(|| format!("binding {path}"))?;
    for conn in listener.incoming() {
        let mut conn = conn?;
        std::thread::spawn(move || {
            let mut req = vec![0u8; request];
            let resp = vec![b'r'; response];
            while conn.read_exact(&mut req).is_ok() {
                if conn.write_all(&resp).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

/// `__exec-in-cgroup DIR... -- PROGRAM`: joins the cgroups (so that
/// everything the program allocates from its first page on is charged to
/// them) and execs the program with an empty environment, fd 3 kept.
fn exec_in_cgroup(args: &[String]) -> Result<()> {
    let split = args
        .iter()
        .position(|a| a == "--")
        .context("usage: __exec-in-cgroup DIR... -- PROGRAM")?;
    let (dirs, program) = (&args[..split], &args[split + 1..]);
    let pid = std::process::id().to_string();
    for dir in dirs {
        std::fs::write(format!("{dir}/cgroup.procs"), &pid)
            .with_context(|| format!("joining {dir}"))?;
    }
    let path = program.first().context("no program")?;
    let argv: Vec<CString> = program
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .context("NUL in an argument")?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let path = CString::new(path.as_str()).context("NUL in the program path")?;
    // SAFETY: NUL-terminated argument and environment vectors of valid C
    // strings that outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp.as_ptr()) };
    Err(std::io::Error::last_os_error()).context("execve")
}
