-- postkit SQL store, schema version 3.
-- The six postfix_* tables are the reference installation's, with the same
-- table and column names and types, so an existing database is adopted as it
-- is. Every statement is idempotent: Migrate runs this file on every open.

CREATE TABLE IF NOT EXISTS postfix_alias (
       id INTEGER PRIMARY KEY AUTOINCREMENT,
       alias TEXT NOT NULL UNIQUE,
       destination TEXT NOT NULL,
       active INTEGER
);
CREATE TABLE IF NOT EXISTS postfix_alias_virtuels (
       id INTEGER PRIMARY KEY AUTOINCREMENT,
       courriel TEXT NOT NULL UNIQUE,
       destination TEXT NOT NULL,
       active INTEGER
);
CREATE TABLE IF NOT EXISTS postfix_domaines (
       id INTEGER PRIMARY KEY AUTOINCREMENT,
       domaine TEXT NOT NULL UNIQUE,
       defaut BOOLEAN NOT NULL CHECK (defaut IN (0, 1)),
       active INTEGER
);
CREATE TABLE IF NOT EXISTS postfix_liste_noire_destinataires (
       id INTEGER PRIMARY KEY AUTOINCREMENT,
       courriel TEXT NOT NULL UNIQUE,
       action TEXT NOT NULL,
       active INTEGER
);
CREATE TABLE IF NOT EXISTS postfix_liste_noire_expediteurs (
       id INTEGER PRIMARY KEY AUTOINCREMENT,
       courriel TEXT NOT NULL UNIQUE,
       code_retour INTEGER NOT NULL,
       message TEXT NOT NULL,
       active INTEGER
);
CREATE TABLE IF NOT EXISTS postfix_utilisateurs (
       id INTEGER PRIMARY KEY AUTOINCREMENT,
       utilisateur TEXT NOT NULL UNIQUE,
       mot_de_passe TEXT NOT NULL,
       nom_complet TEXT,
       rep_perso TEXT NOT NULL,
       uid INTEGER NOT NULL,
       gid INTEGER NOT NULL,
       privilege TEXT NOT NULL,
       prefixe TEXT,
       active INTEGER
);

-- Version 2: per-domain spam allow lists (milter.spam.domain_allow_lists),
-- in the reference's style (domaine, active): mail to the users of domaine
-- whose From domain is domaine_expediteur (or a sub-domain of it), and that
-- domain is authenticated by SPF or DKIM, is not marked as spam.
CREATE TABLE IF NOT EXISTS postkit_liste_blanche_spam (
       id INTEGER PRIMARY KEY AUTOINCREMENT,
       domaine TEXT NOT NULL,
       domaine_expediteur TEXT NOT NULL,
       active INTEGER,
       UNIQUE (domaine, domaine_expediteur)
);

-- Version 3: storage quotas (mailbox.quota), beside the reference's tables,
-- which stay untouched. cible is a user's address (their own limit) or
-- @domain (the limit of the domain's users who have none of their own);
-- octets is the limit in bytes, 0 for none. Dovecot's SQL userdb returns it
-- as the user's quota_rule (sqlmaps.DovecotSQL).
CREATE TABLE IF NOT EXISTS postkit_quotas (
       id INTEGER PRIMARY KEY AUTOINCREMENT,
       cible TEXT NOT NULL UNIQUE,
       octets INTEGER NOT NULL CHECK (octets >= 0),
       active INTEGER
);

-- One row per applied schema version; the highest is the current one.
CREATE TABLE IF NOT EXISTS postkit_schema_version (
       version INTEGER PRIMARY KEY,
       applied_at TEXT NOT NULL
);
