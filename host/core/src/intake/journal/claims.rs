//! Claims on event ids: an id is taken by the first request (or the
//! journal's recovery) that carries it, until the worker has stored it; a
//! second request with it is answered as a duplicate.

use super::Journal;

impl Journal {
    /// Claims event ids for a request: returns, per id, whether it is new to
    /// the journal (and now claimed). Check the store *after* claiming: the
    /// worker stores an event before it releases its id.
    pub fn claim<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Vec<bool> {
        let mut state = self.lock();
        ids.into_iter()
            .map(|id| state.in_flight.insert(id.to_string()))
            .collect()
    }

    /// Gives up claims (a request refused, or ids found in the store).
    pub fn release<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut state = self.lock();
        for id in ids {
            state.in_flight.remove(id);
        }
    }
}
