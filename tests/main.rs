//! The one integration test binary: real `tmidb-supervisor` processes in temp homes on
//! free ports (see `helpers`).

mod helpers;

mod api;
mod cli;
mod contract;
mod ingest;
mod logs;
mod stack;
mod supervisor;
