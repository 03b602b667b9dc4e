//! The wallet customers linked at the simulated aggregator (Linkage, the payer's side): who
//! may pay a merchant-presented QR, with what balance, and their B2B2C tokens.
//!
//! A real wallet links a customer through an account-binding flow that ends with an
//! authorization code; the wallet then exchanges it for a customer token at the SNAP B2B2C
//! token endpoint (`POST /v1.0/access-token/b2b2c`, service 74: `X-CLIENT-KEY`, `X-TIMESTAMP`,
//! RSA `X-SIGNATURE` as for the B2B token; body `grantType` `authorization_code` and
//! `authCode`) and sends it as `Authorization-Customer: Bearer <token>`. The simulator skips
//! the binding: a customer is linked by [`crate::SimHandle::link_customer`] or
//! `POST /sim/linkage/customers {"balance":50000}`, which answers its `authCode`; one demo
//! customer ([`DEMO_AUTH_CODE`]) is always linked.

use std::collections::HashMap;

use jiff::Timestamp;
use rand::distr::Alphanumeric;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

/// The demo customer's authorization code (simulator only, never a real credential).
pub const DEMO_AUTH_CODE: &str = "demo-auth-code-not-for-production";

/// The demo customer's id.
pub const DEMO_CUSTOMER_ID: &str = "CUST-DEMO-1";

/// A linked customer as `/sim/linkage/customers` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedCustomer {
    /// The simulator's id of the customer.
    pub customer_id: String,
    /// The authorization code a wallet exchanges for a customer token.
    pub auth_code: String,
    /// The customer's wallet PAN, masked.
    pub masked_pan: String,
    /// Balance now, whole rupiah.
    pub balance: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Customer {
    pub(crate) id: String,
    pub(crate) auth_code: String,
    pub(crate) pan: String,
    pub(crate) balance: u64,
}

impl Customer {
    fn view(&self) -> LinkedCustomer {
        LinkedCustomer {
            customer_id: self.id.clone(),
            auth_code: self.auth_code.clone(),
            masked_pan: crate::ledger::mask_pan(&self.pan),
            balance: self.balance,
        }
    }
}

/// Why a customer token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CustomerTokenError {
    /// Never issued here.
    Unknown,
    /// Issued, expired.
    Expired,
}

/// Every linked customer and their tokens.
#[derive(Debug, Default)]
pub(crate) struct Customers {
    list: Vec<Customer>,
    /// token → (customer index, expiry)
    tokens: HashMap<String, (usize, Timestamp)>,
}

impl Customers {
    /// The demo customer, with `balance`.
    pub(crate) fn with_demo(balance: u64) -> Customers {
        let mut c = Customers::default();
        c.list.push(Customer {
            id: DEMO_CUSTOMER_ID.into(),
            auth_code: DEMO_AUTH_CODE.into(),
            pan: "9360091500000000011".into(),
            balance,
        });
        c
    }

    /// Links a new customer with `balance`; its auth code is random.
    pub(crate) fn link(&mut self, balance: u64) -> LinkedCustomer {
        let n = self.list.len() + 1;
        let code: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        let c = Customer {
            id: format!("CUST-{n}"),
            auth_code: code,
            // DANA's NNS, then the customer number: a PAN shape wallets use.
            pan: format!("93600915{n:011}"),
            balance,
        };
        let view = c.view();
        self.list.push(c);
        view
    }

    pub(crate) fn all(&self) -> Vec<LinkedCustomer> {
        self.list.iter().map(Customer::view).collect()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Customer> {
        self.list.iter().find(|c| c.id == id)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut Customer> {
        self.list.iter_mut().find(|c| c.id == id)
    }

    /// Issues `token` for the customer holding `auth_code`, valid until `expires`; the
    /// customer's id, or `None` for an unknown code.
    pub(crate) fn issue(
        &mut self,
        auth_code: &str,
        token: String,
        now: Timestamp,
        expires: Timestamp,
    ) -> Option<String> {
        let i = self.list.iter().position(|c| c.auth_code == auth_code)?;
        self.tokens.retain(|_, (_, exp)| *exp > now);
        self.tokens.insert(token, (i, expires));
        self.list.get(i).map(|c| c.id.clone())
    }

    /// The customer a token belongs to.
    pub(crate) fn by_token(
        &self,
        token: &str,
        now: Timestamp,
    ) -> Result<&Customer, CustomerTokenError> {
        match self.tokens.get(token) {
            None => Err(CustomerTokenError::Unknown),
            Some((_, exp)) if *exp <= now => Err(CustomerTokenError::Expired),
            Some((i, _)) => self.list.get(*i).ok_or(CustomerTokenError::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_belong_to_the_auth_codes_customer_and_expire() {
        let t = |s| Timestamp::from_second(s).unwrap();
        let mut c = Customers::with_demo(1000);
        let other = c.link(50);
        assert_eq!(other.customer_id, "CUST-2");
        assert_eq!(other.masked_pan.len(), 19);
        assert_eq!(c.issue("nope", "T0".into(), t(0), t(10)), None);
        assert_eq!(
            c.issue(&other.auth_code, "T1".into(), t(0), t(10))
                .as_deref(),
            Some("CUST-2")
        );
        assert_eq!(c.by_token("T1", t(9)).map(|c| c.balance), Ok(50));
        assert_eq!(
            c.by_token("T1", t(10)).map(|c| c.balance),
            Err(CustomerTokenError::Expired)
        );
        assert_eq!(
            c.by_token("T9", t(0)).map(|c| c.balance),
            Err(CustomerTokenError::Unknown)
        );
        assert_eq!(
            c.issue(DEMO_AUTH_CODE, "T2".into(), t(0), t(10)).as_deref(),
            Some(DEMO_CUSTOMER_ID)
        );
        assert_eq!(c.all().len(), 2);
    }
}
