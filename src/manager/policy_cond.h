/* Policy Enforcer: the CONDITIONS language of a migration policy.
 *
 * A small, total expression language (MISSION.md, Policies):
 *
 *   expr    := or
 *   or      := and ( "or" and )*
 *   and     := not ( "and" not )*
 *   not     := "not" not | compare
 *   compare := primary [ ( "<" | "<=" | ">" | ">=" | "==" | "!=" ) primary ]
 *   primary := NUMBER | STRING | IDENT | "true" | "false" | "(" expr ")"
 *
 * NUMBER: decimal, an optional '-', an optional fraction and exponent, finite.
 * STRING: double-quoted; \" and \\ are its only escapes.  IDENT: a variable
 * the policy's CONTEXT names.  Comparisons take two numbers (any operator),
 * two strings or two booleans (== and != only), and do not chain; and/or/not
 * take booleans; the whole is a boolean.
 *
 * Parsed once, at load time, and type-checked against the CONTEXT's variables;
 * bounded (FM_COND_MAX_*); an error says where (line and column) and what was
 * expected.  Evaluation has no loops, no calls and no side effects: it always
 * ends, and a variable without a value yet is an error (the caller denies:
 * policies fail closed). */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "basic/error.h"

#define FM_COND_MAX_LEN 4096      /* bytes of source */
#define FM_COND_MAX_DEPTH 32      /* nested parentheses and operators */
#define FM_COND_MAX_NODES 512
#define FM_COND_MAX_STRING 256    /* bytes of one string literal */
#define FM_COND_MAX_NUMBER 32     /* characters of one number literal */

typedef enum fm_cond_type { FM_COND_NUMBER = 1, FM_COND_STRING, FM_COND_BOOL } fm_cond_type;

/* A variable a condition may read. */
typedef struct fm_cond_var {
	const char *name;
	fm_cond_type type;
} fm_cond_var;

/* Its value at evaluation time (known false: not measured yet). */
typedef struct fm_cond_value {
	bool known;
	double num;
	const char *str;
	bool b;
} fm_cond_value;

typedef struct fm_cond fm_cond;

/* Parses src against vars (the policy's CONTEXT, typed).  0, or -EINVAL with
 * "line L, column C: ..." in err. */
int fm_cond_parse(const char *src, const fm_cond_var *vars, size_t nvars, fm_cond **out, fm_error *err);
/* values[i] is vars[i]'s.  0 with *result, or < 0 with why in err. */
int fm_cond_eval(const fm_cond *c, const fm_cond_value *values, bool *result, fm_error *err);
/* Whether the condition reads vars[i] (for explanations). */
bool fm_cond_reads(const fm_cond *c, size_t i);
void fm_cond_free(fm_cond *c);
