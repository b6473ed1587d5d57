//! A pooled connection and the statements it has prepared.
//!
//! tokio-postgres prepares a query given as text anew on every call: a
//! round trip to parse it, then the one that runs it, and a parse on the
//! server each time. Here each SQL text is prepared once per connection and
//! run by its prepared statement afterwards, so a statement costs one round
//! trip. The methods keep tokio-postgres's names, so the store's SQL reads
//! the same as with a plain client.
//!
//! Requests that are awaited together go out together (tokio-postgres
//! writes each request when its future is first polled, and the answers
//! come back in order), which [`Conn::at_once`] uses to send a whole
//! transaction before reading any answer.
//!
//! Each pooled connection's socket is driven by the thread that checked
//! the connection out, while it waits for its answers ([`Pooled::run`]).
//! With the socket's task on a shared database thread instead, every round
//! trip cost two thread hand-overs (the request to that thread, the answer
//! back), each a futex wake and a context switch.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Row, Statement, Transaction};

use super::tls::{PgTls, PgTlsStream};
use crate::store::StoreError;

/// Distinct SQL texts kept per connection at most. The store's texts are a
/// fixed set well below this; the bound only keeps a mistake from growing
/// without end.
const MAX_STATEMENTS: usize = 256;

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// Statements prepared on one connection, by SQL text.
#[derive(Default)]
struct Statements {
    prepared: Mutex<HashMap<String, Statement>>,
    /// Set while [`Conn::at_once`] sends: a statement not prepared then
    /// would go out after the `COMMIT`, so it is refused instead.
    sealed: AtomicBool,
}

impl Statements {
    async fn get(&self, client: &impl GenericClient, sql: &str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.lock().get(sql) {
            return Ok(statement.clone());
        }
        if self.sealed.load(Ordering::SeqCst) {
            return Err(StoreError(format!(
                "statement not prepared before its transaction was sent: {sql}"
            )));
        }
        let statement = client.prepare(sql).await?;
        let mut prepared = self.lock();
        if prepared.len() >= MAX_STATEMENTS {
            prepared.clear();
        }
        prepared.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Prepares those of `sqls` not prepared yet.
    async fn prepare(&self, client: &impl GenericClient, sqls: &[&str]) -> Result<(), StoreError> {
        for sql in sqls {
            self.get(client, sql).await?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Statement>> {
        self.prepared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Keeps [`Statements::sealed`] set while it lives, and clears it however
/// it ends (a panic included: the connection stays in the pool).
struct Sealed<'a>(&'a AtomicBool);

impl<'a> Sealed<'a> {
    fn new(flag: &'a AtomicBool) -> Sealed<'a> {
        flag.store(true, Ordering::SeqCst);
        Sealed(flag)
    }
}

impl Drop for Sealed<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// What runs statements: a connection outside a transaction, or one.
pub(super) trait Sql {
    async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
        Ok(self.query_db(sql, params).await??)
    }
    async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, StoreError>;
    /// [`Sql::query`] with the database's error given back as it is (the
    /// outer error: the statement could not be prepared), for a caller
    /// that tells errors apart by their SQLSTATE.
    async fn query_db(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Result<Vec<Row>, tokio_postgres::Error>, StoreError>;
}

/// A pooled connection's socket task, owned by the pool rather than
/// spawned: it is polled beside each call's statements, on the caller's
/// thread, and at no other time. What the server sends between calls (a
/// notice, its closing) is read at the next call.
type Connection = tokio_postgres::Connection<tokio_postgres::Socket, PgTlsStream>;

/// A runtime of one connection's own, single-threaded and without a thread
/// of its own: it holds the socket's registration and the connect timer,
/// and runs only while a caller waits in [`Driver::block_on`].
struct Driver(Option<tokio::runtime::Runtime>);

impl Driver {
    fn new() -> Result<Driver, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                StoreError(format!("cannot start a database connection's runtime: {e}"))
            })?;
        Ok(Driver(Some(runtime)))
    }

    /// Runs `future` to its end on this thread.
    ///
    /// Tokio refuses to start a runtime on a thread inside another one's
    /// task; there, [`tokio::task::block_in_place`] first leaves that
    /// runtime (handing a worker's other tasks to a new thread). So a call
    /// works from a plain thread, `spawn_blocking` and a multi-threaded
    /// runtime's tasks, but not from a current-thread runtime's tasks.
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        let Some(runtime) = &self.0 else {
            // Only while dropping, when nothing calls.
            return futures_executor::block_on(future);
        };
        if tokio::runtime::Handle::try_current().is_err() {
            // Outside every runtime: the intake's committer, the state writer.
            runtime.block_on(future)
        } else {
            tokio::task::block_in_place(|| runtime.block_on(future))
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio refuses on another
        // runtime's task: a store may well be dropped on one.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A connection of the pool, with its socket task and the runtime that
/// drives both (fields drop in this order: the socket before its runtime).
pub(super) struct Pooled {
    conn: Conn,
    /// `None` once it ended (the server closed it, or it broke).
    connection: Option<Pin<Box<Connection>>>,
    driver: Driver,
}

impl Pooled {
    /// Connects with `config`, in `schema`.
    pub(super) fn connect(
        config: &tokio_postgres::Config,
        tls: &PgTls,
        schema: &str,
    ) -> Result<Pooled, StoreError> {
        let driver = Driver::new()?;
        let (client, connection) = driver.block_on(config.connect(tls.clone()))?;
        let mut pooled = Pooled {
            conn: Conn::new(client),
            connection: Some(Box::pin(connection)),
            driver,
        };
        let sql = set_search_path(schema);
        pooled.run(async |c| c.batch_execute(&sql).await)?;
        Ok(pooled)
    }

    pub(super) fn conn(&self) -> &Conn {
        &self.conn
    }

    /// Runs `f` on the connection and waits for it here, driving the
    /// socket meanwhile.
    pub(super) fn run<T>(&mut self, f: impl AsyncFnOnce(&mut Conn) -> T) -> T {
        let Pooled {
            conn,
            connection,
            driver,
        } = self;
        driver.block_on(drive(connection, f(conn)))
    }
}

/// Polls `work` and then the connection, in turn, until `work` ends; then
/// the connection once more. That last poll sends what `work` queued on
/// its way out: a transaction dropped unfinished (a read that returns
/// early, an error) queues its `ROLLBACK` without waiting for it, and left
/// queued until this connection's next use, it would keep the transaction's
/// locks and stall every other connection waiting on them.
async fn drive<T>(
    connection: &mut Option<Pin<Box<Connection>>>,
    work: impl Future<Output = T>,
) -> T {
    let mut work = std::pin::pin!(work);
    let out = std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        poll_connection(connection, cx);
        Poll::Pending
    })
    .await;
    std::future::poll_fn(|cx| {
        poll_connection(connection, cx);
        Poll::Ready(())
    })
    .await;
    out
}

/// Lets the connection send what is queued and read what arrived (waking
/// `work` with its answers). Once it ended it is dropped: the answers
/// still awaited then fail, which ends `work` with an error.
fn poll_connection(connection: &mut Option<Pin<Box<Connection>>>, cx: &mut Context<'_>) {
    let Some(socket) = connection.as_mut() else {
        return;
    };
    if let Poll::Ready(ended) = socket.as_mut().poll(cx) {
        if let Err(e) = ended {
            tracing::warn!(error = %StoreError::from(e), "database connection ended");
        }
        *connection = None;
        cx.waker().wake_by_ref();
    }
}

/// The statement putting a new connection in `schema`. The schema may not
/// exist yet (before the first migration): `search_path` names it anyway.
pub(super) fn set_search_path(schema: &str) -> String {
    format!("SET search_path TO {schema}")
}

/// A connection of the pool.
pub(super) struct Conn {
    client: Client,
    statements: Statements,
    /// Set while [`Conn::at_once`] has a transaction open: still set
    /// afterwards only if it never finished (a panic), and then the
    /// connection must not be used again, or its next statements would run
    /// in that transaction and never commit.
    unfinished: AtomicBool,
}

impl Conn {
    pub(super) fn new(client: Client) -> Conn {
        Conn {
            client,
            statements: Statements::default(),
            unfinished: AtomicBool::new(false),
        }
    }

    /// Whether the connection is gone, or cannot be trusted with another
    /// statement (see [`Conn::unfinished`]).
    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed() || self.unfinished.load(Ordering::SeqCst)
    }

    /// Forgets the prepared statements: after an error, in case a schema
    /// change (another node's migration) left one unusable.
    pub(super) fn forget_statements(&self) {
        self.statements.lock().clear();
    }

    /// The connection itself, for what is run once (migrations).
    pub(super) fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    pub(super) async fn transaction(&mut self) -> Result<Tx<'_>, StoreError> {
        Ok(Tx {
            tx: self.client.transaction().await?,
            statements: &self.statements,
        })
    }

    /// Runs `body` as one transaction written in one go: `BEGIN`, the
    /// statements `body` sends, `COMMIT`, before any answer is read. One
    /// round trip instead of one per statement and two more.
    ///
    /// For that, `body` must send all its statements when first polled
    /// (statements awaited together, none after an answer: the `COMMIT` is
    /// on its way by then), and each of them must be in `sqls`, which are
    /// prepared first; one that is not fails the transaction. A statement
    /// that fails makes the server roll the transaction back (the `COMMIT`
    /// of a failed transaction is a rollback), and its error is returned.
    pub(super) async fn at_once<T>(
        &self,
        sqls: &[&str],
        body: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.statements.prepare(&self.client, sqls).await?;
        self.unfinished.store(true, Ordering::SeqCst);
        let sealed = Sealed::new(&self.statements.sealed);
        let result = tokio::try_join!(
            biased;
            async { Ok::<_, StoreError>(self.client.batch_execute("BEGIN").await?) },
            body,
            async { Ok(self.client.batch_execute("COMMIT").await?) },
        );
        drop(sealed);
        let out = match result {
            Ok(((), out, ())) => Ok(out),
            Err(e) => {
                // `body` may have failed before the `COMMIT` went out, with
                // the transaction begun: close it, whatever state it is in.
                let _ = self.client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        };
        self.unfinished.store(false, Ordering::SeqCst);
        out
    }

    pub(super) async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, StoreError> {
        let statement = self.statements.get(&self.client, sql).await?;
        Ok(self.client.query_one(&statement, params).await?)
    }

    pub(super) async fn query_opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, StoreError> {
        let statement = self.statements.get(&self.client, sql).await?;
        Ok(self.client.query_opt(&statement, params).await?)
    }

    pub(super) async fn batch_execute(&self, sql: &str) -> Result<(), StoreError> {
        Ok(self.client.batch_execute(sql).await?)
    }
}

impl Sql for Conn {
    async fn query_db(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Result<Vec<Row>, tokio_postgres::Error>, StoreError> {
        query(&self.client, &self.statements, sql, params).await
    }

    async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
        execute(&self.client, &self.statements, sql, params).await
    }
}

/// Runs `sql` by its prepared statement on `client` (a connection or a
/// transaction on it).
async fn query(
    client: &impl GenericClient,
    statements: &Statements,
    sql: &str,
    params: Params<'_>,
) -> Result<Result<Vec<Row>, tokio_postgres::Error>, StoreError> {
    let statement = statements.get(client, sql).await?;
    Ok(client.query(&statement, params).await)
}

async fn execute(
    client: &impl GenericClient,
    statements: &Statements,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, StoreError> {
    let statement = statements.get(client, sql).await?;
    Ok(client.execute(&statement, params).await?)
}

/// A transaction on a [`Conn`], using its prepared statements.
pub(super) struct Tx<'a> {
    tx: Transaction<'a>,
    statements: &'a Statements,
}

impl Tx<'_> {
    /// Prepares `sqls` now, so that statements awaited together later go
    /// out in the order they are polled (one not prepared yet would wait
    /// for its preparation while the next went ahead).
    pub(super) async fn prepare(&self, sqls: &[&str]) -> Result<(), StoreError> {
        self.statements.prepare(&self.tx, sqls).await
    }

    pub(super) async fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit().await?)
    }
}

impl Sql for Tx<'_> {
    async fn query_db(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Result<Vec<Row>, tokio_postgres::Error>, StoreError> {
        query(&self.tx, self.statements, sql, params).await
    }

    async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
        execute(&self.tx, self.statements, sql, params).await
    }
}
