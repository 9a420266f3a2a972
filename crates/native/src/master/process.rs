//! Process chores of the master and workers: the pid file, process titles, umask, and
//! dropping privileges to `user`/`group` in workers.

use std::ffi::CString;

use pyo3::prelude::*;

/// Write `pid` to `path` (creating or truncating it). Refuses when the file names another live
/// process, as Gunicorn does.
pub fn write_pidfile(path: &str, pid: u32) -> Result<(), String> {
    if let Some(other) = std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse::<i32>().ok())
        && other > 0
        && other as u32 != pid
        // SAFETY: signal 0 only checks whether the process exists.
        && unsafe { libc::kill(other, 0) } == 0
    {
        return Err(format!("Already running on PID {other} (or pid file '{path}' is stale)"));
    }
    std::fs::write(path, format!("{pid}\n")).map_err(|e| {
        format!("cannot write the pid file {path:?} (setting `pidfile`, -p/--pid): {e}")
    })
}

/// Remove the pid file if it still holds `pid`.
pub fn remove_pidfile(path: &str, pid: u32) {
    if std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse::<u32>().ok()) == Some(pid) {
        let _ = std::fs::remove_file(path);
    }
}

/// Set the process title: `ferrocorn: master [name]`. Uses the `setproctitle` module when
/// installed (so `ps` shows it), and always the kernel's short name (`/proc/PID/comm`).
pub fn set_title(py: Python<'_>, title: &str) {
    if let Ok(module) = py.import("setproctitle") {
        let _ = module.call_method1("setproctitle", (title,));
    }
    let short: String = title.chars().take(15).collect();
    if let Ok(name) = CString::new(short) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
    }
}

/// Set the umask.
pub fn set_umask(mask: u32) {
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(mask as libc::mode_t) };
}

fn lookup_user(user: &str) -> Result<(u32, u32, CString), String> {
    let name = CString::new(user).map_err(|_| format!("invalid user name {user:?}"))?;
    // SAFETY: getpwnam/getpwuid return a pointer into static storage or null; we copy the
    // fields out before any other call could overwrite it (single-threaded worker boot).
    let pw = unsafe {
        match user.parse::<u32>() {
            Ok(uid) => libc::getpwuid(uid),
            Err(_) => libc::getpwnam(name.as_ptr()),
        }
    };
    if pw.is_null() {
        return match user.parse::<u32>() {
            Ok(uid) => Ok((uid, u32::MAX, name)),
            Err(_) => Err(format!("no such user {user:?} (setting `user`, -u/--user)")),
        };
    }
    // SAFETY: `pw` is non-null and points at a valid passwd record (see above).
    let (uid, gid, pw_name) =
        unsafe { ((*pw).pw_uid, (*pw).pw_gid, std::ffi::CStr::from_ptr((*pw).pw_name).to_owned()) };
    Ok((uid, gid, pw_name))
}

fn lookup_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = CString::new(group).map_err(|_| format!("invalid group name {group:?}"))?;
    // SAFETY: getgrnam returns static storage or null; read at once.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    if gr.is_null() {
        return Err(format!("no such group {group:?} (setting `group`, -g/--group)"));
    }
    // SAFETY: non-null pointer to a valid group record.
    Ok(unsafe { (*gr).gr_gid })
}

/// Switch this (worker) process to `user`/`group`, with the user's supplementary groups when
/// `initgroups`. Group first, then user, as the user change removes the right to do the rest.
pub fn drop_privileges(
    user: Option<&str>,
    group: Option<&str>,
    initgroups: bool,
) -> Result<(), String> {
    let user_info = user.map(lookup_user).transpose()?;
    let gid = match group {
        Some(g) => Some(lookup_group(g)?),
        None => user_info.as_ref().map(|(_, gid, _)| *gid).filter(|g| *g != u32::MAX),
    };
    if let Some(gid) = gid {
        if initgroups {
            if let Some((_, _, name)) = &user_info {
                // SAFETY: `name` is a valid C string; initgroups reads the group database.
                if unsafe { libc::initgroups(name.as_ptr(), gid) } != 0 {
                    return Err(format!("initgroups failed: {}", std::io::Error::last_os_error()));
                }
            }
        } else {
            // SAFETY: clearing supplementary groups; needs privileges, checked by the result.
            let _ = unsafe { libc::setgroups(0, std::ptr::null()) };
        }
        // SAFETY: setgid with a plain id.
        if unsafe { libc::setgid(gid) } != 0 {
            return Err(format!(
                "cannot switch to group {gid}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    if let Some((uid, _, _)) = user_info {
        // SAFETY: setuid with a plain id.
        if unsafe { libc::setuid(uid) } != 0 {
            return Err(format!(
                "cannot switch to user {uid}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
