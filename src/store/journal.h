/* The journal: every durable fact of a daemon in one SQLite database.
 *
 * The controller journals each migration transition *before* the step it starts
 * (synchronous=FULL, WAL), so a daemon killed at any instant finds every migration
 * in a known state on restart and resolves it.  The agent keeps its containers,
 * reservations and in-flight incoming/outgoing migrations here too.
 *
 * The API is deliberately small: exec with bound parameters, and query returning
 * rows as JSON objects (column name -> value), which is what the HTTP API serves.
 * Parameter formats: 's' string (NULL binds NULL), 'i' int64_t, 'd' double.
 * All calls are serialized by the journal's own mutex; safe from any thread.
 */
#pragma once
#include <jansson.h>
#include <stdint.h>

#include "basic/error.h"

typedef struct fm_journal fm_journal;

int fm_journal_open(const char *path, fm_journal **out, fm_error *err);
void fm_journal_close(fm_journal *j);

/* Executes one statement; returns the number of changed rows or -errno. */
int fm_journal_exec(fm_journal *j, const char *sql, const char *fmt, ...);
/* Runs a query; *rows is a JSON array of objects (caller owns). */
int fm_journal_query(fm_journal *j, json_t **rows, const char *sql, const char *fmt, ...);
/* First row or NULL (caller owns). */
json_t *fm_journal_query_one(fm_journal *j, const char *sql, const char *fmt, ...);

/* Explicit transactions for multi-statement changes that must land together. */
int fm_journal_begin(fm_journal *j);
int fm_journal_commit(fm_journal *j);
void fm_journal_rollback(fm_journal *j);

/* Integer column helper: value of the first column of the first row, or dflt. */
int64_t fm_journal_query_int(fm_journal *j, int64_t dflt, const char *sql, const char *fmt, ...);
