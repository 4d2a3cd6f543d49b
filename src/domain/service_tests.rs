//! Unit tests of the use cases, with every port mocked.
use super::*;
