//! The writer thread: owns the segment being written, appends every frame
//! that queued up while the previous `fdatasync` ran, and syncs once for all
//! of them (group commit).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::{Command, JournalError, SEGMENT_BYTES, State, io_error, open_segment, segment_path};

/// A frame, its event count, and who waits for it.
type PendingAppend = (Vec<u8>, u64, oneshot::Sender<Result<u64, JournalError>>);

/// Owns the segment being written; runs on its own thread.
pub(super) struct Writer {
    pub(super) dir: PathBuf,
    /// `None` after a failed write: the next command starts a new segment,
    /// so no good frame lands behind a torn one.
    pub(super) file: Option<File>,
    pub(super) state: Arc<Mutex<State>>,
}

impl Writer {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn run(mut self, commands: std_mpsc::Receiver<Command>) {
        while let Ok(first) = commands.recv() {
            // Everything that queued while the last sync ran shares this one.
            let mut appends = Vec::new();
            let mut rotations = Vec::new();
            let mut next = Some(first);
            while let Some(command) = next {
                match command {
                    Command::Append {
                        frame,
                        events,
                        done,
                    } => appends.push((frame, events, done)),
                    Command::Rotate { done } => rotations.push(done),
                }
                next = commands.try_recv().ok();
            }
            if !appends.is_empty() {
                self.write(appends);
            }
            if !rotations.is_empty() {
                let (current, bytes) = {
                    let state = self.lock();
                    (state.current, state.current_bytes)
                };
                if (bytes > 0 || self.file.is_none())
                    && let Err(e) = self.start_segment(current + 1)
                {
                    tracing::error!(error = %e, "cannot start a journal segment");
                }
                for done in rotations {
                    let _ = done.send(());
                }
            }
        }
    }

    fn start_segment(&mut self, segment: u64) -> Result<(), JournalError> {
        self.file = None;
        let prepared = self.lock().prepared == Some(segment);
        let file = if prepared {
            let path = segment_path(&self.dir, segment);
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| io_error("cannot open", &path, e))?
        } else {
            open_segment(&self.dir, segment)?
        };
        self.file = Some(file);
        let mut state = self.lock();
        let old = state.current;
        state.sealed.insert(old);
        state.current = segment;
        state.current_bytes = 0;
        Ok(())
    }

    fn write(&mut self, appends: Vec<PendingAppend>) {
        let result = self.write_frames(appends.iter().map(|(frame, _, _)| frame.as_slice()));
        match result {
            Ok(bytes) => {
                let segment = {
                    let mut state = self.lock();
                    state.current_bytes += bytes;
                    let segment = state.current;
                    let total: u64 = appends.iter().map(|(_, n, _)| n).sum();
                    *state.outstanding.entry(segment).or_default() += total;
                    segment
                };
                for (_, _, done) in appends {
                    let _ = done.send(Ok(segment));
                }
                if self.lock().current_bytes >= SEGMENT_BYTES {
                    let next = segment + 1;
                    if let Err(e) = self.start_segment(next) {
                        tracing::error!(error = %e, "cannot start a journal segment");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "journal write failed");
                // Cut off what was written of it, so the next frame follows
                // the last good one in the same file; if even that fails,
                // the next write starts a new segment (the old one is read
                // up to its last good frame). No new file per failure: a
                // full disk would otherwise collect empty segments.
                let good = self.lock().current_bytes;
                let cut = self
                    .file
                    .as_ref()
                    .is_some_and(|f| f.set_len(good).and_then(|()| f.sync_data()).is_ok());
                if !cut {
                    self.file = None;
                }
                for (_, _, done) in appends {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }

    fn write_frames<'a>(
        &mut self,
        frames: impl Iterator<Item = &'a [u8]>,
    ) -> Result<u64, JournalError> {
        if self.file.is_none() {
            let current = self.lock().current;
            self.start_segment(current + 1)?;
        }
        let path = segment_path(&self.dir, self.lock().current);
        let Some(file) = self.file.as_mut() else {
            return Err(JournalError("no segment open".into()));
        };
        let mut buffer = Vec::new();
        for frame in frames {
            buffer.extend_from_slice(frame);
        }
        file.write_all(&buffer)
            .map_err(|e| io_error("cannot write", &path, e))?;
        file.sync_data()
            .map_err(|e| io_error("cannot sync", &path, e))?;
        Ok(buffer.len() as u64)
    }
}
