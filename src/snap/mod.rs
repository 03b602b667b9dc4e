//! BI SNAP client mechanics: signatures, headers, the token cache, wire types and the
//! classification of responses into what tapgate does next.

pub mod sign;
