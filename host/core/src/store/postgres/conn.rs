//! A pooled connection and the statements it has prepared.
//!
//! tokio-postgres prepares a query given as text anew on every call: a
//! round trip to parse it, then the one that runs it, and a parse on the
//! server each time. Here each SQL text is prepared once per connection and
//! run by its prepared statement afterwards, so a statement costs one round
//! trip. The methods keep tokio-postgres's names, so the store's SQL reads
//! the same as with a plain client.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error, GenericClient, Row, Statement, Transaction};

/// Distinct SQL texts kept per connection at most. The store's texts are a
/// fixed set well below this; the bound only keeps a mistake from growing
/// without end.
const MAX_STATEMENTS: usize = 256;

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// Statements prepared on one connection, by SQL text.
#[derive(Default)]
struct Statements(Mutex<HashMap<String, Statement>>);

impl Statements {
    async fn get(&self, client: &impl GenericClient, sql: &str) -> Result<Statement, Error> {
        if let Some(statement) = self.lock().get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql).await?;
        let mut statements = self.lock();
        if statements.len() >= MAX_STATEMENTS {
            statements.clear();
        }
        statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Statement>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection of the pool.
pub(super) struct Conn {
    client: Client,
    statements: Statements,
}

impl Conn {
    pub(super) fn new(client: Client) -> Conn {
        Conn {
            client,
            statements: Statements::default(),
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
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

    pub(super) async fn transaction(&mut self) -> Result<Tx<'_>, Error> {
        Ok(Tx {
            tx: self.client.transaction().await?,
            statements: &self.statements,
        })
    }

    pub(super) async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        let statement = self.statements.get(&self.client, sql).await?;
        self.client.query(&statement, params).await
    }

    pub(super) async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, Error> {
        let statement = self.statements.get(&self.client, sql).await?;
        self.client.query_one(&statement, params).await
    }

    pub(super) async fn query_opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, Error> {
        let statement = self.statements.get(&self.client, sql).await?;
        self.client.query_opt(&statement, params).await
    }

    pub(super) async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        let statement = self.statements.get(&self.client, sql).await?;
        self.client.execute(&statement, params).await
    }

    pub(super) async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.client.batch_execute(sql).await
    }
}

/// A transaction on a [`Conn`], using its prepared statements.
pub(super) struct Tx<'a> {
    tx: Transaction<'a>,
    statements: &'a Statements,
}

impl Tx<'_> {
    pub(super) async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        let statement = self.statements.get(&self.tx, sql).await?;
        self.tx.query(&statement, params).await
    }

    pub(super) async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        let statement = self.statements.get(&self.tx, sql).await?;
        self.tx.execute(&statement, params).await
    }

    pub(super) async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await
    }
}

/// What reads rows, outside a transaction or in one.
pub(super) trait Query {
    async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error>;
}

impl Query for Conn {
    async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        Conn::query(self, sql, params).await
    }
}

impl Query for Tx<'_> {
    async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        Tx::query(self, sql, params).await
    }
}
